import { ISessionContext, Notification } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Contents, KernelAPI, ServiceManager } from '@jupyterlab/services';

import {
  isWalnutKernel,
  nextWait,
  onlyOutputsDiffer,
  REATTACH_GIVE_UP_MS,
  reloadedText,
  samePath,
  unsavedText,
  WrittenTracker
} from './logic/awayOutputs';
import { errorText } from './logic/errors';
import { WalnutModel } from './model';

/**
 * A tab left open while the renter's server was away (issue #17). When the server comes
 * back it re-attaches the session's kernel under the same id, but it has forgotten the
 * notebook's server session, so the tab reconnects to that kernel; and once the server has
 * written the outputs made meanwhile into the file, the tab reloads it when that loses
 * nothing the user wrote, else asks first.
 */
export function followAwayKernels(model: WalnutModel, notebooks: INotebookTracker, services: ServiceManager.IManager): void {
  notebooks.forEach(panel => reattachOnReturn(panel.sessionContext, services));
  notebooks.widgetAdded.connect((_, panel) => reattachOnReturn(panel.sessionContext, services));
  const tracker = new WrittenTracker();
  model.changed.connect(() => {
    if (model.sessionsError !== null) {
      return;
    }
    for (const written of tracker.fresh(model.sessions)) {
      notebooks.forEach(panel => {
        if (samePath(panel.context.path, written.path)) {
          void reload(panel, written.path, services.contents);
        }
      });
    }
  });
}

function reattachOnReturn(context: ISessionContext, services: ServiceManager.IManager): void {
  let walnutKernel: string | null = null;
  const note = () => {
    const kernel = context.session?.kernel;
    if (kernel) {
      walnutKernel = isWalnutKernel(kernel.name) ? kernel.id : null;
    }
  };
  context.kernelChanged.connect(note);
  context.sessionChanged.connect((_, change) => {
    note();
    if (change.newValue === null && walnutKernel && !context.isDisposed && !context.isTerminating) {
      void reattach(context, walnutKernel, services);
    }
  });
}

async function reattach(context: ISessionContext, kernelId: string, services: ServiceManager.IManager): Promise<void> {
  const giveUp = Date.now() + REATTACH_GIVE_UP_MS;
  let wait = 0;
  while (!context.isDisposed && !context.session && Date.now() < giveUp) {
    wait = nextWait(wait);
    await new Promise(resolve => setTimeout(resolve, wait)); // a server coming back up
    let listed = false;
    try {
      listed = (await KernelAPI.getKernelModel(kernelId, services.serverSettings)) !== undefined;
    } catch {
      continue; // the server is not answering yet
    }
    if (listed && !context.session) {
      try {
        await context.changeKernel({ id: kernelId });
      } catch (e) {
        Notification.error(`Could not reconnect to the Walnut kernel: ${errorText(e)}`, { autoClose: 10000 });
      }
      return;
    }
  }
}

async function reload(panel: NotebookPanel, path: string, contents: Contents.IManager): Promise<void> {
  const revert = async () => {
    try {
      await panel.context.revert();
      Notification.info(reloadedText(path), { autoClose: 8000 });
    } catch (e) {
      Notification.error(`Could not reload ${path}: ${errorText(e)}`, { autoClose: 10000 });
    }
  };
  let safe = !panel.context.model.dirty;
  if (!safe) {
    try {
      const disk = await contents.get(panel.context.path, { type: 'notebook', content: true });
      safe = onlyOutputsDiffer(panel.context.model.toJSON() as never, disk.content);
    } catch {
      safe = false;
    }
  }
  if (safe) {
    await revert();
    return;
  }
  Notification.warning(unsavedText(path), {
    autoClose: false,
    actions: [{ label: 'Reload', callback: () => void revert() }]
  });
}
