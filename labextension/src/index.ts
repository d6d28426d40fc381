import { ILabShell, ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, InputDialog, Notification } from '@jupyterlab/apputils';
import { IFileBrowserFactory } from '@jupyterlab/filebrowser';
import { ILauncher } from '@jupyterlab/launcher';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';

import { followAwayKernels } from './awayOutputs';
import { WorkspaceDrives } from './drive';
import { walnutIcon } from './icons';
import { KernelPicker } from './kernelPicker';
import { errorText } from './logic/errors';
import { formatSui } from './logic/money';
import { isActive } from './logic/sessions';
import { ISession } from './logic/types';
import { resultsText } from './logic/workspace';
import { WalnutModel } from './model';
import { OffersView } from './offersView';
import { WalnutPanel } from './panel';
import { WalnutStatus } from './statusbar';
import { SessionTerminals } from './terminal';

namespace CommandIDs {
  export const open = 'walnut:open';
  export const launch = 'walnut:launch';
  export const stop = 'walnut:stop';
  export const openNotebook = 'walnut:open-notebook';
  export const refresh = 'walnut:refresh';
  export const offers = 'walnut:offers';
}

const CATEGORY = 'Walnut';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-walnut:plugin',
  description: 'Walnut: rent remote GPU/CPU kernels by the second.',
  autoStart: true,
  optional: [
    ICommandPalette,
    ILayoutRestorer,
    IStatusBar,
    INotebookTracker,
    ILabShell,
    IFileBrowserFactory,
    ILauncher
  ],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    statusBar: IStatusBar | null,
    notebooks: INotebookTracker | null,
    _labShell: ILabShell | null,
    fileBrowsers: IFileBrowserFactory | null,
    launcher: ILauncher | null
  ) => {
    const model = new WalnutModel(app.serviceManager);
    // each running session's workspace as a drive, with a file browser on demand (issue #16)
    const drives = new WorkspaceDrives(app, fileBrowsers, model);
    const terminals = new SessionTerminals(app);
    const { commands } = app;
    if (notebooks) {
      followAwayKernels(model, notebooks, app.serviceManager); // a tab left open while away (#17)
    }

    const openNotebook = (s: ISession) => {
      void commands.execute('notebook:create-new', { kernelName: s.kernel_name }).catch(e =>
        Notification.error(`Could not open a notebook: ${errorText(e)}`, { autoClose: 8000 })
      );
    };
    const useInCurrentNotebook = (s: ISession) => {
      const current = notebooks?.currentWidget;
      if (!current) {
        openNotebook(s);
        return;
      }
      void current.sessionContext.changeKernel({ name: s.kernel_name }).catch(e =>
        Notification.error(`Could not switch the kernel: ${errorText(e)}`, { autoClose: 8000 })
      );
    };

    const panel = new WalnutPanel(model, commands, {
      openNotebook,
      useInCurrentNotebook,
      canUseInCurrentNotebook: () => Boolean(notebooks?.currentWidget),
      currentNotebookPath: () => notebooks?.currentWidget?.context.path ?? null,
      openFiles: drives.available ? (s: ISession) => drives.open(s) : undefined,
      openTerminal: (s: ISession) => void terminals.openTerminal(s),
      openPort: (s: ISession) => void terminals.openPort(s)
    });
    app.shell.add(panel, 'left', { rank: 850 });
    if (restorer) {
      restorer.add(panel, 'jupyter-walnut-panel');
    }
    notebooks?.currentChanged.connect(() => model.notify());

    const openPanel = () => app.shell.activateById(panel.id);

    const saveResults = async (s: ISession) => {
      try {
        const saved = await model.saveResults(s.id);
        Notification.success(resultsText(saved.results, Date.now() / 1000) ?? 'Results saved.', { autoClose: 8000 });
      } catch (e) {
        Notification.error(`Could not save the results of the session on ${s.node}: ${errorText(e)}`, {
          autoClose: 10000
        });
      }
    };
    // warnings before the end: budget threshold, minutes left (issue #16)
    model.warnings.connect((_, { session: s, warning: w }) => {
      const offered = Array.isArray(w.actions) ? w.actions : ['top_up', 'save_results'];
      const actions = [];
      if (offered.includes('top_up')) {
        actions.push({
          label: 'Top up',
          callback: () => {
            model.requestTopUp(s.id);
            openPanel();
          }
        });
      }
      if (offered.includes('save_results')) {
        actions.push({ label: 'Save results', callback: () => void saveResults(s) });
      }
      if (offered.includes('keep_running')) {
        actions.push({
          label: 'Keep running',
          callback: () =>
            void model.keepRunning(s.id).catch(e =>
              Notification.error(`Could not keep the session on ${s.node} running: ${errorText(e)}`, {
                autoClose: 10000
              })
            )
        });
      }
      Notification.warning(`Walnut session on ${s.node}: ${w.message}`, { autoClose: false, actions });
    });

    // notifications for what happens while the user looks elsewhere
    model.events.connect((_, event) => {
      const s = event.session;
      switch (event.kind) {
        case 'started':
          if (model.launch?.session?.id !== s.id) {
            Notification.success(`Walnut session on ${s.node} is running.`, { autoClose: 5000 });
          }
          break;
        case 'budget-low':
          Notification.warning(
            `The session on ${s.node} has used most of its budget: ${formatSui(s.remaining_mist)} left.`,
            {
              autoClose: false,
              actions: [{ label: 'Top up', callback: openPanel }]
            }
          );
          break;
        case 'ended-by-provider':
          Notification.warning(
            `The session on ${s.node} was stopped by the provider (${s.reason || 'no reason given'}). Final cost ${formatSui(
              s.cost_mist
            )}.`,
            { autoClose: false }
          );
          break;
        case 'failed':
          Notification.error(`The session on ${s.node} failed: ${s.reason || 'no reason given'}.`, {
            autoClose: false
          });
          break;
      }
    });

    commands.addCommand(CommandIDs.open, {
      label: 'Open Walnut Panel',
      caption: 'Show the Walnut sidebar: providers, sessions, wallet',
      icon: walnutIcon,
      execute: openPanel
    });
    // every offer in the main area, sortable by verified performance per MIST (issue #21)
    let offersView: OffersView | null = null;
    // "New Walnut kernel…" in the kernel picker and the launcher: the offers view, filtered
    // by what the notebook imports; the notebook then takes the launched session's kernel
    const picker = new KernelPicker(app.serviceManager.kernelspecs, model);
    commands.addCommand(CommandIDs.offers, {
      label: args => (args.isLauncher ? 'Walnut offers' : 'Browse Walnut Offers'),
      caption: 'Every offer in a sortable, filterable grid; launch from a row',
      icon: walnutIcon,
      execute: args => {
        if (!offersView || offersView.isDisposed) {
          offersView = new OffersView(
            model,
            key => {
              openPanel();
              panel.showLaunch(key);
            },
            picker
          );
          app.shell.add(offersView, 'main');
        }
        if (typeof args.query === 'string') {
          offersView.setQuery(args.query);
        }
        app.shell.activateById(offersView.id);
      }
    });
    picker.picked.connect((_, target) => void commands.execute(CommandIDs.offers, { query: target.needs.query }));
    notebooks?.forEach(nb => picker.watch(nb));
    notebooks?.widgetAdded.connect((_, nb) => picker.watch(nb));
    commands.addCommand(CommandIDs.launch, {
      label: 'Launch a Walnut Session…',
      caption: 'Pick an offer and a budget, then start a remote kernel',
      icon: walnutIcon,
      execute: args => {
        openPanel();
        panel.showLaunch(typeof args.offer === 'string' ? args.offer : undefined);
      }
    });
    commands.addCommand(CommandIDs.stop, {
      label: 'Stop a Walnut Session…',
      caption: 'Stop a running Walnut session and settle its cost',
      isEnabled: () => model.sessions.some(isActive),
      execute: async args => {
        const active = model.sessions.filter(isActive);
        let id = typeof args.id === 'string' ? args.id : undefined;
        if (!id) {
          if (active.length === 0) {
            Notification.info('No Walnut session is running.', { autoClose: 4000 });
            return;
          }
          const labels = active.map(s => `${s.node} · ${s.shape} · ${formatSui(s.cost_mist)} so far (${s.id})`);
          const choice = await InputDialog.getItem({
            title: 'Stop which Walnut session?',
            items: labels,
            okLabel: 'Stop'
          });
          if (!choice.button.accept || choice.value === null) {
            return;
          }
          id = active[labels.indexOf(choice.value)]?.id;
        }
        if (!id) {
          return;
        }
        try {
          const s = await model.stopSession(id);
          Notification.info(`Session on ${s.node} stopped. Final cost ${formatSui(s.cost_mist)}.`, {
            autoClose: 6000
          });
        } catch (e) {
          Notification.error(`Could not stop the session: ${errorText(e)}`, { autoClose: 10000 });
        }
      }
    });
    commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh Walnut',
      execute: () => model.refreshAll()
    });

    if (palette) {
      for (const command of [CommandIDs.open, CommandIDs.offers, CommandIDs.launch, CommandIDs.stop, CommandIDs.refresh]) {
        palette.addItem({ command, category: CATEGORY });
      }
    }
    launcher?.add({ command: CommandIDs.offers, category: 'Other', rank: 0, args: { isLauncher: true } });

    if (statusBar) {
      const item = new WalnutStatus(model, openPanel);
      statusBar.registerStatusItem('jupyter-walnut:status', {
        item,
        align: 'left',
        rank: 100,
        isActive: () => true
      });
    }
  }
};

export default plugin;
