import { ServiceManager } from '@jupyterlab/services';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { requestAPI } from './api';
import { errorText } from './logic/errors';
import { pollPlan, MAX_BACKOFF_MS } from './logic/polling';
import { activeTotals, isActive, isSettling, ITotals, SessionEvent, sessionEvents } from './logic/sessions';
import { ILaunchStep } from './logic/launch';
import { INewWarning, newWarnings } from './logic/workspace';
import { IFolderPlan, ILaunchRequest, IOffer, ISession, IWallet } from './logic/types';
import { ISample, pushSample, toSample } from './logic/usage';

/** Running until the kernel is listed, then done; or error, with the server's message. */
export type LaunchPhase = 'running' | 'done' | 'error';

export interface ILaunchState {
  request: ILaunchRequest;
  phase: LaunchPhase;
  startedAt: number;
  /** The session the server recorded for this launch, once it has one. */
  session?: ISession;
  /** Its launch steps as the server recorded them (empty until the session exists). */
  steps: ILaunchStep[];
  error?: string;
}

/**
 * The Walnut state in the browser: offers, sessions, wallet, live usage, all refreshed by
 * @lumino/polling Polls (backoff on errors, standby while the page is hidden).
 */
export class WalnutModel {
  constructor(private readonly services: ServiceManager.IManager) {
    this._sessionsPoll = new Poll({
      auto: true,
      factory: () => this.refreshSessions(),
      frequency: { interval: 15000, backoff: true, max: MAX_BACKOFF_MS },
      name: 'jupyter-walnut:sessions',
      standby: 'when-hidden'
    });
    this._offersPoll = new Poll({
      auto: false,
      factory: () => this.refreshOffers(),
      frequency: { interval: pollPlan(0, false).offersMs, backoff: true, max: MAX_BACKOFF_MS },
      name: 'jupyter-walnut:offers',
      standby: () => (this._panelVisible ? 'when-hidden' : true)
    });
    this._walletPoll = new Poll({
      auto: false,
      factory: () => this.refreshWallet(),
      frequency: { interval: pollPlan(0, false).walletMs, backoff: true, max: MAX_BACKOFF_MS },
      name: 'jupyter-walnut:wallet',
      standby: () => (this._panelVisible ? 'when-hidden' : true)
    });
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }
  /** Things to notify the user about (started, budget low, ended by the provider). */
  get events(): ISignal<this, SessionEvent> {
    return this._events;
  }
  /** A session's warning not shown before (budget threshold, minutes before the end). */
  get warnings(): ISignal<this, INewWarning> {
    return this._warnings;
  }
  /** A launch of this page whose kernel can now be selected, with what was asked for. */
  get launched(): ISignal<this, { session: ISession; request: ILaunchRequest }> {
    return this._launched;
  }

  offers: IOffer[] = [];
  offersLoaded = false;
  offersError: string | null = null;
  sessions: ISession[] = [];
  sessionsError: string | null = null;
  wallet: IWallet | null = null;
  walletError: string | null = null;
  launch: ILaunchState | null = null;
  /** The offer the user picked in the table, for the launch form. */
  selectedOffer: string | null = null;
  usage = new Map<string, ISample[]>();
  busy = new Set<string>();

  get totals(): ITotals {
    return activeTotals(this.sessions);
  }

  /** Start fetching offers and the wallet (once the panel is first shown). */
  setPanelVisible(visible: boolean, viewer = 'panel'): void {
    // the sidebar and the offers view (issue #21) each keep the polls going while shown
    if (visible) {
      this._viewers.add(viewer);
    } else {
      this._viewers.delete(viewer);
    }
    this._panelVisible = this._viewers.size > 0;
    if (visible) {
      if (!this._started) {
        this._started = true;
        void this._offersPoll.start();
        void this._walletPoll.start();
      } else {
        void this._offersPoll.refresh();
        void this._walletPoll.refresh();
      }
    }
  }

  async refreshOffers(): Promise<void> {
    try {
      const data = await requestAPI<{ offers: IOffer[] }>('offers');
      this.offers = data.offers;
      this.offersError = null;
    } catch (e) {
      this.offersError = errorText(e);
      throw e; // the poll backs off
    } finally {
      this.offersLoaded = true;
      this._changed.emit();
    }
  }

  async refreshWallet(): Promise<void> {
    try {
      this.wallet = await requestAPI<IWallet>('wallet');
      this.walletError = null;
    } catch (e) {
      this.walletError = errorText(e);
      throw e;
    } finally {
      this._changed.emit();
    }
  }

  async refreshSessions(): Promise<void> {
    let sessions: ISession[];
    try {
      sessions = (await requestAPI<{ sessions: ISession[] }>('sessions')).sessions;
      this.sessionsError = null;
    } catch (e) {
      this.sessionsError = errorText(e);
      this._changed.emit();
      throw e;
    }
    const events = sessionEvents(this._lastSessions, sessions);
    const money = (list: ISession[] | null) =>
      (list ?? []).map(s => `${s.id}:${s.status}:${s.settlement}:${String(s.budget_mist)}`).join();
    const moneyMoved = this._lastSessions !== null && money(this._lastSessions) !== money(sessions);
    const specsChanged =
      this._lastSessions !== null &&
      sessions.filter(isActive).map(s => s.id).join() !== this._lastSessions.filter(isActive).map(s => s.id).join();
    this._lastSessions = sessions;
    this.sessions = sessions;
    const now = Date.now() / 1000;
    for (const s of sessions) {
      if (isActive(s)) {
        this.usage.set(s.id, pushSample(this.usage.get(s.id) ?? [], toSample(s.usage, now)));
      }
    }
    this._updateLaunchProgress(sessions);
    const launched = this.launch?.phase === 'done' ? this.launch.session?.id : undefined;
    if (launched && !sessions.some(s => s.id === launched && isActive(s))) {
      this.launch = null; // its session ended: the progress has nothing more to say
    }
    this._retune();
    this._changed.emit();
    for (const event of events) {
      this._events.emit(event);
    }
    for (const warning of newWarnings(this._seenWarnings, sessions)) {
      this._warnings.emit(warning);
    }
    if (moneyMoved) {
      // a channel opened, was topped up or settled: the balance changed
      void this._walletPoll.refresh();
    }
    if (specsChanged) {
      // a session's kernelspec appears or disappears with it
      void this.services.kernelspecs.refreshSpecs();
    }
  }

  /** Launch a session; resolves with it once its kernel can be selected. */
  async launchSession(request: ILaunchRequest): Promise<ISession> {
    const known = new Set(this.sessions.map(s => s.id));
    this._launchKnown = known;
    this.launch = { request, phase: 'running', startedAt: Date.now(), steps: [] };
    this._retune();
    this._changed.emit();
    try {
      const session = await requestAPI<ISession>('sessions', {
        method: 'POST',
        body: JSON.stringify(request)
      });
      this.launch = { ...this.launch, session, steps: session.launch ?? [] };
      this._changed.emit();
      await this.services.kernelspecs.refreshSpecs();
      this.launch = { ...this.launch, phase: 'done' };
      this._lastSessions = [...(this._lastSessions ?? []).filter(s => s.id !== session.id), session];
      await this._sessionsPoll.refresh();
      void this._walletPoll.refresh();
      this._launched.emit({ session, request });
      return session;
    } catch (e) {
      // the session recorded for it, if any, says which step failed (next refresh)
      this.launch = { ...this.launch, phase: 'error', error: errorText(e) };
      void this._sessionsPoll.refresh();
      void this._walletPoll.refresh();
      throw e;
    } finally {
      this._retune();
      this._changed.emit();
    }
  }

  /** Re-render the views. */
  notify(): void {
    this._changed.emit();
  }

  dismissLaunch(): void {
    this.launch = null;
    this._changed.emit();
  }

  async stopSession(id: string): Promise<ISession> {
    return this._withBusy(id, async () => {
      const s = await requestAPI<ISession>(`sessions/${id}`, { method: 'DELETE' });
      this._replace(s);
      // the user asked: no "ended by the provider" notification for this one
      this._lastSessions = (this._lastSessions ?? []).map(x => (x.id === s.id ? s : x));
      await this.services.kernelspecs.refreshSpecs();
      void this._walletPoll.refresh();
      return s;
    });
  }

  async topUp(id: string, amountMist: bigint): Promise<ISession> {
    return this._withBusy(id, async () => {
      const s = await requestAPI<ISession>(`sessions/${id}/topup`, {
        method: 'POST',
        body: JSON.stringify({ amount_mist: Number(amountMist) })
      });
      this._replace(s);
      this._lastSessions = (this._lastSessions ?? []).map(x => (x.id === s.id ? s : x));
      void this._walletPoll.refresh();
      return s;
    });
  }

  /** Away mode on (a budget in MIST, for `seconds`) or off (null): issue #17. */
  async setAway(id: string, away: { budgetMist: bigint; seconds: number } | null): Promise<ISession> {
    return this._withBusy(id, async () => {
      const s = await requestAPI<ISession>(
        `sessions/${id}/away`,
        away === null
          ? { method: 'DELETE' }
          : { method: 'POST', body: JSON.stringify({ budget_mist: away.budgetMist.toString(), seconds: away.seconds }) }
      );
      this._replace(s);
      this._lastSessions = (this._lastSessions ?? []).map(x => (x.id === s.id ? s : x));
      return s;
    });
  }

  /** The session whose card should open its top-up form (from a notification). */
  topUpFor: string | null = null;

  requestTopUp(id: string): void {
    this.topUpFor = id;
    this._changed.emit();
  }

  /** Copy the session's outputs back now (the results REST); resolves with its state. */
  async saveResults(id: string): Promise<ISession> {
    return this._withBusy(`results:${id}`, async () => {
      await requestAPI<unknown>(`sessions/${id}/results`, { method: 'POST', body: '{}' });
      const s = await requestAPI<ISession>(`sessions/${id}`);
      this._replace(s);
      return s;
    });
  }

  /** What launching with this notebook's folder would send (its size, against the cap). */
  async folderPlan(notebookPath: string): Promise<IFolderPlan> {
    return requestAPI<IFolderPlan>(`folder?folder_from_notebook=${encodeURIComponent(notebookPath)}`);
  }

  /** The idle warning's action (issue #17): the session's idle clock starts again. */
  async keepRunning(id: string): Promise<ISession> {
    return this._withBusy(`idle:${id}`, async () => {
      const s = await requestAPI<ISession>(`sessions/${id}`, {
        method: 'PATCH',
        body: JSON.stringify({ keep_running: true })
      });
      this._replace(s);
      return s;
    });
  }

  async fundWallet(amountMist: bigint): Promise<void> {
    await this._withBusy('wallet', async () => {
      const w = await requestAPI<IWallet>('wallet/fund', {
        method: 'POST',
        body: JSON.stringify({ amount_mist: Number(amountMist) })
      });
      this.wallet = { ...(this.wallet ?? { address: w.address }), ...w };
    });
  }

  refreshAll(): void {
    void this._sessionsPoll.refresh();
    void this._offersPoll.refresh();
    void this._walletPoll.refresh();
  }

  dispose(): void {
    this._sessionsPoll.dispose();
    this._offersPoll.dispose();
    this._walletPoll.dispose();
    Signal.clearData(this);
  }

  private async _withBusy<T>(key: string, fn: () => Promise<T>): Promise<T> {
    this.busy.add(key);
    this._changed.emit();
    try {
      return await fn();
    } finally {
      this.busy.delete(key);
      this._changed.emit();
    }
  }

  private _replace(s: ISession): void {
    this.sessions = this.sessions.map(x => (x.id === s.id ? s : x));
    this._changed.emit();
  }

  private _updateLaunchProgress(sessions: ISession[]): void {
    const launch = this.launch;
    if (!launch || launch.phase === 'done' || !this._launchKnown) {
      return;
    }
    // the server records the session once the provider accepted it, with the steps so far
    const fresh = sessions.find(
      s =>
        (launch.session ? s.id === launch.session.id : !this._launchKnown!.has(s.id)) &&
        s.provider_url === launch.request.provider_url &&
        (s.launch ?? []).length > 0
    );
    if (fresh) {
      this.launch = { ...launch, session: fresh, steps: fresh.launch ?? [] };
    }
  }

  /** Poll fast only while something runs. */
  private _retune(): void {
    const plan = pollPlan(
      this.totals.active,
      this.launch !== null && this.launch.phase === 'running',
      this.sessions.filter(isSettling).length
    );
    if (this._sessionsPoll.frequency.interval !== plan.sessionsMs) {
      this._sessionsPoll.frequency = { ...this._sessionsPoll.frequency, interval: plan.sessionsMs };
    }
    if (this._walletPoll.frequency.interval !== plan.walletMs) {
      this._walletPoll.frequency = { ...this._walletPoll.frequency, interval: plan.walletMs };
    }
  }

  private _changed = new Signal<this, void>(this);
  private _events = new Signal<this, SessionEvent>(this);
  private _warnings = new Signal<this, INewWarning>(this);
  private _launched = new Signal<this, { session: ISession; request: ILaunchRequest }>(this);
  private _seenWarnings = new Set<string>();
  private _sessionsPoll: Poll;
  private _offersPoll: Poll;
  private _viewers = new Set<string>();
  private _walletPoll: Poll;
  private _panelVisible = false;
  private _started = false;
  private _lastSessions: ISession[] | null = null;
  private _launchKnown: Set<string> | null = null;
}
