import { ISessionContext, Notification } from '@jupyterlab/apputils';
import { NotebookPanel } from '@jupyterlab/notebook';
import { KernelSpec } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { errorText } from './logic/errors';
import { INeeds, isLaunchOf, isPickerKernel, needsQuery, notebookImports } from './logic/needs';
import { WalnutModel } from './model';

/** A notebook waiting for the kernel of a session launched from the offers view. */
export interface IPickTarget {
  sessionContext: ISessionContext;
  /** Its path, as the offers view names it. */
  path: string;
  needs: INeeds;
  /** The offer the user launched from the view for it (offerKey), once they did. */
  offer?: string;
}

/**
 * "New Walnut kernel…" in the kernel picker and the launcher (issue #21).
 *
 * The server lists the `walnut-new` kernelspec; choosing it must start nothing. The choice
 * reaches a notebook's SessionContext one of two ways, and each is caught before a kernel
 * starts: `changeKernel` (the Select Kernel dialog, Kernel > Change Kernel…, commands), and
 * the kernel preference (the launcher's card, a notebook saved naming it), which
 * `initialize()` would start. Either way the notebook keeps the kernel it had (none for a new
 * one) and `picked` fires; once the session launched from the offers view for it runs, the
 * notebook switches to that session's kernel.
 */
export class KernelPicker {
  constructor(
    private readonly specs: KernelSpec.IManager,
    model: WalnutModel
  ) {
    model.launched.connect((_, { session, request }) => {
      const target = this._target;
      if (!target || !isLaunchOf(target.offer, request)) {
        return;
      }
      this._setTarget(null);
      if (target.sessionContext.isDisposed) {
        return;
      }
      target.sessionContext.changeKernel({ name: session.kernel_name }).then(
        () => Notification.success(`${target.path} now runs on the session on ${session.node}.`, { autoClose: 5000 }),
        e => Notification.error(`Could not switch ${target.path} to the new kernel: ${errorText(e)}`, { autoClose: 10000 })
      );
    });
  }

  /** The notebook the offers view is choosing a kernel for, if any. */
  get target(): IPickTarget | null {
    return this._target;
  }

  /** The picker entry was chosen for a notebook: open the offers view. */
  get picked(): ISignal<this, IPickTarget> {
    return this._picked;
  }

  /** Target or its offer changed (the offers view's note). */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** The user launches this offer from the offers view: its session is the notebook's. */
  launchingFrom(offer: string): void {
    if (this._target) {
      this._target.offer = offer;
      this._changed.emit();
    }
  }

  /** Choose no kernel through the offers view after all. */
  cancel(): void {
    this._setTarget(null);
  }

  /** Catch the picker entry in this notebook, from now on. */
  watch(panel: NotebookPanel): void {
    const ctx = panel.sessionContext;
    const pick = () => {
      const sources = Array.from(panel.content.model?.cells ?? [])
        .filter(cell => cell.type === 'code')
        .map(cell => cell.sharedModel.getSource());
      this._setTarget({ sessionContext: ctx, path: panel.context.path, needs: needsQuery(notebookImports(sources)) });
      this._picked.emit(this._target!);
    };
    // 1. changeKernel: SessionContext has no hook before it starts a kernel, so the
    // instance's method is wrapped; every other kernel goes through unchanged
    const changeKernel = ctx.changeKernel.bind(ctx);
    ctx.changeKernel = async options => {
      if (this._isPicker(options?.name)) {
        pick();
        return ctx.session?.kernel ?? null;
      }
      return changeKernel(options);
    };
    // 2. the preference initialize() starts: the launcher's card sets it at creation, the
    // document context from the notebook's metadata once loaded (both before initialize()
    // reads it, after awaiting the server's sessions)
    const checkPreference = () => {
      const preference = ctx.kernelPreference;
      if (!this._isPicker(preference.name)) {
        return;
      }
      const { shouldStart } = preference;
      ctx.kernelPreference = { ...preference, name: undefined, shouldStart: false };
      void ctx.ready.then(() => {
        if (!ctx.isDisposed) {
          ctx.kernelPreference = { ...ctx.kernelPreference, shouldStart };
        }
      });
      // the notebook's cells once loaded (a new one has none)
      void panel.context.ready.then(() => !ctx.isDisposed && pick());
    };
    checkPreference();
    ctx.kernelPreferenceChanged.connect(checkPreference);
    ctx.disposed.connect(() => {
      if (this._target?.sessionContext === ctx) {
        this._setTarget(null);
      }
    });
  }

  private _isPicker(name: string | undefined): boolean {
    return isPickerKernel(name, name ? this.specs.specs?.kernelspecs[name] : null);
  }

  private _setTarget(target: IPickTarget | null): void {
    this._target = target;
    this._changed.emit();
  }

  private _target: IPickTarget | null = null;
  private _picked = new Signal<this, IPickTarget>(this);
  private _changed = new Signal<this, void>(this);
}
