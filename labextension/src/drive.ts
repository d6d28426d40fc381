import { JupyterFrontEnd } from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { FileBrowser, IFileBrowserFactory, Uploader } from '@jupyterlab/filebrowser';
import { Contents, Drive, ServerConnection } from '@jupyterlab/services';
import {
  closeIcon,
  downloadIcon,
  editIcon,
  folderIcon,
  newFolderIcon,
  refreshIcon,
  ToolbarButton
} from '@jupyterlab/ui-components';
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { errorText } from './logic/errors';
import { driveBaseUrl, driveNameFor, planDrives, uploadText } from './logic/workspace';
import { ISession } from './logic/types';
import { WalnutModel } from './model';

/**
 * A running session's workspace as a Jupyter drive: the Contents API of the renter's own
 * server under /walnut/sessions/<sid>/, which relays it to the session (the session token
 * stays on the server). Downloads go to the server's attachment route, so a file the
 * provider wrote never renders on this origin.
 */
export class SessionDrive extends Drive {
  constructor(
    readonly sessionId: string,
    name: string
  ) {
    super({
      name,
      serverSettings: ServerConnection.makeSettings({ baseUrl: driveBaseUrl(PageConfig.getBaseUrl(), sessionId) })
    });
  }

  /** Uploads through this drive: started, done or failed (JupyterLab's file browser model
   * reports only the chunks of files over 1 MB). */
  get uploads(): ISignal<this, IUploadEvent> {
    return this._uploads;
  }

  async save(localPath: string, options: Partial<Contents.IModel> = {}): Promise<Contents.IModel> {
    const upload = options.type === 'file' && options.format === 'base64';
    const chunk = (options as { chunk?: number }).chunk;
    const name = localPath.split('/').pop() ?? localPath;
    if (upload && (chunk === undefined || chunk === 1)) {
      this._uploads.emit({ name, state: 'started' });
    }
    try {
      const model = await super.save(localPath, options);
      if (upload && (chunk === undefined || chunk === -1)) {
        this._uploads.emit({ name, state: 'done' });
      }
      return model;
    } catch (e) {
      if (upload) {
        this._uploads.emit({ name, state: 'failed' });
      }
      throw e;
    }
  }

  async getDownloadUrl(localPath: string): Promise<string> {
    const url = new URL(URLExt.join(this.serverSettings.baseUrl, 'files', URLExt.encodeParts(localPath)), location.href);
    const xsrf = document.cookie.match('\\b_xsrf=([^;]*)\\b');
    if (xsrf) {
      url.searchParams.append('_xsrf', xsrf[1]);
    }
    return url.toString();
  }

  private _uploads = new Signal<this, IUploadEvent>(this);
}

export interface IUploadEvent {
  name: string;
  state: 'started' | 'done' | 'failed';
}

interface IEntry {
  session: ISession;
  drive: SessionDrive;
  browser: FileBrowser | null;
}

/** One drive per running session, and its file browser once the user opens it ("Files");
 * both go away when the session ends. */
export class WorkspaceDrives {
  constructor(
    private readonly app: JupyterFrontEnd,
    private readonly factory: IFileBrowserFactory | null,
    model: WalnutModel
  ) {
    model.changed.connect(() => this._sync(model.sessions));
  }

  /** Whether file browsers can be opened here (JupyterLab's file browser is loaded). */
  get available(): boolean {
    return this.factory !== null;
  }

  /** The drive name of a running session, e.g. to open `name:data.csv`. */
  driveName(sessionId: string): string | null {
    return this._entries.get(sessionId)?.drive.name ?? null;
  }

  /** Show the session's files in the left sidebar (created on first use). */
  open(s: ISession): void {
    this._sync([...this._sessions.filter(x => x.id !== s.id), s]);
    const entry = this._entries.get(s.id);
    if (!entry || !this.factory) {
      Notification.warning('The session’s files are available only while it runs.', { autoClose: 5000 });
      return;
    }
    if (!entry.browser || entry.browser.isDisposed) {
      entry.browser = this._createBrowser(entry);
    }
    this.app.shell.activateById(entry.browser.id);
  }

  private _createBrowser(entry: IEntry): FileBrowser {
    const s = entry.session;
    const browser = this.factory!.createFileBrowser(`jp-Walnut-files-${s.id}`, {
      driveName: entry.drive.name,
      refreshInterval: 5000,
      restore: false
    });
    browser.addClass('jp-Walnut-files');
    browser.node.dataset.session = s.id;
    browser.title.icon = folderIcon;
    browser.title.caption = `Files of the Walnut session on ${s.node} (${s.id})`;
    const tb = browser.toolbar;
    const button = (name: string, icon: typeof folderIcon, tooltip: string, run: () => Promise<unknown>) =>
      tb.addItem(
        name,
        new ToolbarButton({
          icon,
          tooltip,
          onClick: () => void run().catch(e => Notification.error(`${tooltip}: ${errorText(e)}`, { autoClose: 8000 }))
        })
      );
    const head = new Widget();
    head.addClass('jp-Walnut-filesHead');
    head.node.textContent = `${s.node} · workspace`;
    tb.addItem('walnut-title', head);
    tb.addItem('upload', new Uploader({ model: browser.model }));
    button('new-folder', newFolderIcon, 'New folder', () => browser.createNewDirectory());
    button('download', downloadIcon, 'Download', () => browser.download());
    button('rename', editIcon, 'Rename', () => browser.rename());
    button('delete', closeIcon, 'Delete', () => browser.delete());
    button('refresh', refreshIcon, 'Refresh', () => browser.model.refresh());
    const progress = new Widget();
    progress.addClass('jp-Walnut-uploadProgress');
    progress.node.setAttribute('role', 'status');
    progress.node.setAttribute('aria-live', 'polite');
    browser.addWidget(progress); // under the listing, where the toolbar cannot fold it away
    entry.drive.uploads.connect((_, up) => {
      progress.node.textContent =
        up.state === 'done' ? `Uploaded ${up.name}` : up.state === 'failed' ? `Upload of ${up.name} failed` : uploadText(up.name, 0);
    });
    browser.model.uploadChanged.connect((_, change) => {
      // chunks of a large file: how far it got
      if (change.name === 'update' && change.newValue) {
        progress.node.textContent = uploadText(change.newValue.path.split('/').pop() ?? '', change.newValue.progress);
      }
    });
    this.app.shell.add(browser, 'left', { rank: 851 });
    return browser;
  }

  private _sync(sessions: ISession[]): void {
    this._sessions = sessions;
    const plan = planDrives(this._entries.keys(), sessions);
    for (const id of plan.remove) {
      this._remove(id);
    }
    for (const s of plan.add) {
      const drive = new SessionDrive(s.id, driveNameFor(s));
      this.app.serviceManager.contents.addDrive(drive);
      this._entries.set(s.id, { session: s, drive, browser: null });
    }
  }

  private _remove(id: string): void {
    const entry = this._entries.get(id);
    this._entries.delete(id);
    if (!entry) {
      return;
    }
    // documents opened from the drive go with it: their session is gone, nothing can be
    // saved. Disposed, not closed: a close goes through the document manager's asynchronous
    // "save your work?" path, and a document still open once the drive is forgotten
    // resolves its path on the local server (its tab label change then renames there)
    const opened = [...this.app.shell.widgets('main')].filter(widget => {
      const path = (widget as any).context?.path;
      return typeof path === 'string' && path.startsWith(`${entry.drive.name}:`);
    });
    for (const widget of opened) {
      widget.dispose();
    }
    entry.browser?.dispose();
    // ContentsManager has no removeDrive: forget it so its name resolves nowhere
    (this.app.serviceManager.contents as any)._additionalDrives?.delete?.(entry.drive.name);
    entry.drive.dispose();
  }

  private _entries = new Map<string, IEntry>();
  private _sessions: ISession[] = [];
}
