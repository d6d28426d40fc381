import { JupyterFrontEnd } from '@jupyterlab/application';
import { InputDialog, MainAreaWidget, Notification } from '@jupyterlab/apputils';
import { PageConfig } from '@jupyterlab/coreutils';
import { ServerConnection, TerminalManager } from '@jupyterlab/services';
import { Terminal } from '@jupyterlab/terminal';

import { errorText } from './logic/errors';
import { ISession } from './logic/types';
import { appUrl, checkPort, driveBaseUrl } from './logic/workspace';

/**
 * A session's terminals and web apps (issue #16). The terminal is JupyterLab's own widget
 * over the renter server's `/walnut/sessions/<sid>/` terminal API, which relays it to the
 * session with the session token (never in the browser); it ends with the session, as its
 * websocket does. An app opens through the server's proxy page, which signs the browser in
 * on the session's own origin (extension/port_proxy.py), with no token in the URL.
 */
export class SessionTerminals {
  constructor(private readonly app: JupyterFrontEnd) {}

  async openTerminal(s: ISession): Promise<void> {
    const serverSettings = ServerConnection.makeSettings({ baseUrl: driveBaseUrl(PageConfig.getBaseUrl(), s.id) });
    const manager = new TerminalManager({ serverSettings });
    try {
      const connection = await manager.startNew();
      const content = new Terminal(connection);
      content.title.label = `Terminal · ${s.node}`;
      const widget = new MainAreaWidget({ content });
      widget.id = `jp-Walnut-terminal-${s.id}-${connection.name}`;
      widget.addClass('jp-Walnut-terminal');
      widget.node.dataset.session = s.id;
      widget.title.label = `Terminal · ${s.node}`;
      widget.title.caption = `A shell in the Walnut session ${s.id} on ${s.node}`;
      widget.title.closable = true;
      widget.disposed.connect(() => manager.dispose());
      this.app.shell.add(widget, 'main');
      this.app.shell.activateById(widget.id);
    } catch (e) {
      manager.dispose();
      Notification.error(`Could not open a terminal in the session: ${errorText(e)}`, { autoClose: 8000 });
    }
  }

  /** Ask for a port, then open the app there in a new tab (like jupyter-server-proxy). */
  async openPort(s: ISession): Promise<void> {
    const answer = await InputDialog.getText({
      title: `Open a web app of the session on ${s.node}`,
      label: 'Port the app listens on in the session (e.g. 6006 for TensorBoard)',
      placeholder: '6006'
    });
    if (!answer.button.accept) {
      return;
    }
    const port = checkPort(answer.value ?? '');
    if (port === null) {
      Notification.error('A port is a number from 1 to 65535.', { autoClose: 5000 });
      return;
    }
    window.open(appUrl(PageConfig.getBaseUrl(), s.id, port), '_blank', 'noopener');
  }
}
