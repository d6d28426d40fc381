import { Notification } from '@jupyterlab/apputils';
import { ReactWidget, refreshIcon, UseSignal } from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { walnutIcon } from './icons';
import { JobsSection } from './jobs';
import { reliabilityLabel, verificationBadge } from './logic/analytics';
import { errorText } from './logic/errors';
import { failedBeforeCharging, failedStep, launchView, stepLabel } from './logic/launch';
import { formatSui, parseSui, toMist } from './logic/money';
import {
  describeHardware,
  filterOffers,
  formatMemory,
  offerKey,
  offerPricePerHour,
  parseFilter,
  SortDir,
  SortKey,
  sortOffers
} from './logic/offers';
import {
  budgetFraction,
  budgetLevel,
  depositOf,
  elapsedSeconds,
  isActive,
  isFailedLaunch,
  launchQuote,
  remainingSeconds,
  settlementAmounts,
  settlementLabel
} from './logic/sessions';
import { formatDuration, formatDurationLong } from './logic/time';
import { IOffer, ISession } from './logic/types';
import { formatPct, sparkline } from './logic/usage';
import { WalnutModel } from './model';
import { HistoryView, ProviderView } from './widgets/analytics';

export interface IPanelActions {
  openNotebook(session: ISession): void;
  useInCurrentNotebook?: (session: ISession) => void;
  canUseInCurrentNotebook(): boolean;
}

/** The Walnut sidebar: wallet, providers, launch form and sessions. */
export class WalnutPanel extends ReactWidget {
  constructor(
    readonly model: WalnutModel,
    private readonly commands: CommandRegistry,
    private readonly actions: IPanelActions
  ) {
    super();
    this.id = 'jupyter-walnut-panel';
    this.addClass('jp-Walnut');
    this.title.icon = walnutIcon;
    this.title.caption = 'Walnut: rent remote compute';
  }

  /** Bring the launch form into view, with this offer picked. */
  showLaunch(offer?: string): void {
    if (offer) {
      this.model.selectedOffer = offer;
    }
    this.model.notify();
    requestAnimationFrame(() => {
      const el = this.node.querySelector('#jp-Walnut-launch') as HTMLElement | null;
      el?.scrollIntoView({ behavior: 'smooth', block: 'start' });
      (el?.querySelector('select, input') as HTMLElement | null)?.focus();
    });
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.model.setPanelVisible(true);
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.model.setPanelVisible(false);
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this.model.changed}>
        {() => (
          <div className="jp-Walnut-body">
            <header className="jp-Walnut-header">
              <h2 className="jp-Walnut-title">Walnut</h2>
              <button
                className="jp-Walnut-iconButton"
                title="Refresh everything"
                aria-label="Refresh everything"
                onClick={() => this.model.refreshAll()}
              >
                <refreshIcon.react tag="span" />
              </button>
            </header>
            <WalletSection model={this.model} />
            <SessionsSection model={this.model} actions={this.actions} commands={this.commands} />
            <ProvidersSection model={this.model} onLaunch={key => this.showLaunch(key)} />
            <LaunchSection model={this.model} actions={this.actions} />
            <JobsSection model={this.model} />
            <Section id="jp-Walnut-history" title="History">
              <HistoryView refreshKey={historyKey(this.model)} />
            </Section>
            <ProviderView
              refreshKey={historyKey(this.model)}
              wrap={body => (
                <Section id="jp-Walnut-provider" title="Provider">
                  {body}
                </Section>
              )}
            />
          </div>
        )}
      </UseSignal>
    );
  }
}

/** Changes when a session starts, ends or settles: the history views fetch again. */
function historyKey(model: WalnutModel): string {
  return model.sessions.map(s => `${s.id}:${s.status}:${s.settlement}`).join();
}

function Section(props: { id: string; title: string; extra?: React.ReactNode; children: React.ReactNode }) {
  const headingId = `${props.id}-heading`;
  return (
    <section className="jp-Walnut-section" id={props.id} aria-labelledby={headingId}>
      <div className="jp-Walnut-sectionHeader">
        <h3 id={headingId}>{props.title}</h3>
        {props.extra}
      </div>
      {props.children}
    </section>
  );
}

function ErrorNote(props: { text: string | null | undefined }) {
  if (!props.text) {
    return null;
  }
  return (
    <div className="jp-Walnut-error" role="alert">
      {props.text}
    </div>
  );
}

// ---------------------------------------------------------------------------------------
// Wallet

const DEMO_FUND_MIST = 10n * 1_000_000_000n;

function WalletSection(props: { model: WalnutModel }) {
  const { model } = props;
  const w = model.wallet;
  const [copied, setCopied] = React.useState(false);
  const local = w?.network === 'local';
  const fund = async () => {
    try {
      await model.fundWallet(DEMO_FUND_MIST);
      Notification.success(`Added ${formatSui(DEMO_FUND_MIST, { minDecimals: 0 })} to the demo account.`, {
        autoClose: 4000
      });
    } catch (e) {
      Notification.error(`Could not fund the demo account: ${errorText(e)}`, { autoClose: 8000 });
    }
  };
  return (
    <Section id="jp-Walnut-wallet" title="Wallet">
      <ErrorNote text={model.walletError} />
      {w ? (
        <dl className="jp-Walnut-wallet">
          <dt>Balance</dt>
          <dd className="jp-Walnut-balance" data-testid="walnut-balance">
            {w.balance_mist === undefined || w.balance_mist === null ? 'n/a' : formatSui(w.balance_mist)}
          </dd>
          <dt>Network</dt>
          <dd>
            <span className={`jp-Walnut-badge ${local ? 'jp-mod-local' : 'jp-mod-network'}`}>
              {w.network ? (local ? 'local ledger' : `Sui ${w.network}`) : 'n/a'}
            </span>
          </dd>
          <dt>Address</dt>
          <dd className="jp-Walnut-address">
            <code title={w.address}>{shortAddress(w.address)}</code>
            <button
              className="jp-Walnut-link"
              onClick={() => {
                void navigator.clipboard?.writeText(w.address);
                setCopied(true);
                setTimeout(() => setCopied(false), 1500);
              }}
            >
              {copied ? 'copied' : 'copy'}
            </button>
          </dd>
        </dl>
      ) : (
        !model.walletError && <p className="jp-Walnut-muted">Loading the wallet…</p>
      )}
      {local && (
        <button
          className="jp-Button jp-mod-styled jp-Walnut-secondary"
          disabled={model.busy.has('wallet')}
          onClick={() => void fund()}
        >
          {model.busy.has('wallet') ? 'Funding…' : `Fund demo account (+${formatSui(DEMO_FUND_MIST, { minDecimals: 0 })})`}
        </button>
      )}
    </Section>
  );
}

function shortAddress(a: string): string {
  return a.length > 16 ? `${a.slice(0, 8)}…${a.slice(-6)}` : a;
}

// ---------------------------------------------------------------------------------------
// Providers

const COLUMNS: { key: SortKey; label: string; title: string; num?: boolean }[] = [
  { key: 'node', label: 'Offer', title: 'Provider, region, shape and hardware' },
  { key: 'price', label: 'SUI/h', title: 'Price per hour, and measured latency', num: true },
  { key: 'free', label: 'Free', title: 'Free session slots', num: true },
  {
    key: 'reliability',
    label: 'Rel.',
    title: 'Reliability 0-100 from evidence: sessions, checks at session start, uptime, settlements',
    num: true
  }
];

const SORTS: { key: SortKey; label: string }[] = [
  { key: 'price', label: 'price' },
  { key: 'vram', label: 'VRAM' },
  { key: 'gpu', label: 'GPU count' },
  { key: 'cpus', label: 'CPU' },
  { key: 'memory', label: 'RAM' },
  { key: 'latency', label: 'latency' },
  { key: 'free', label: 'free capacity' },
  { key: 'reliability', label: 'reliability' },
  { key: 'region', label: 'region' },
  { key: 'node', label: 'name' }
];

function ProvidersSection(props: { model: WalnutModel; onLaunch: (key: string) => void }) {
  const { model } = props;
  const [query, setQuery] = React.useState('');
  const [sort, setSort] = React.useState<{ key: SortKey; dir: SortDir }>({ key: 'price', dir: 'asc' });
  const filter = parseFilter(query);
  const rows = sortOffers(filterOffers(model.offers, query), sort.key, sort.dir);
  const toggle = (key: SortKey) =>
    setSort(s => ({ key, dir: s.key === key && s.dir === 'asc' ? 'desc' : 'asc' }));
  return (
    <Section id="jp-Walnut-providers" title="Providers">
      <input
        className="jp-mod-styled jp-Walnut-filter"
        type="search"
        placeholder='Filter, e.g. "gpu >= 24 GB, under 1 SUI/h"'
        aria-label="Filter offers"
        value={query}
        onChange={e => setQuery(e.target.value)}
      />
      {filter.errors.length > 0 && <div className="jp-Walnut-hint">{filter.errors.join('; ')}</div>}
      <div className="jp-Walnut-sortBar">
        <label>
          Sort by{' '}
          <select
            className="jp-mod-styled"
            aria-label="Sort offers by"
            value={sort.key}
            onChange={e => setSort({ key: e.target.value as SortKey, dir: sort.dir })}
          >
            {SORTS.map(o => (
              <option key={o.key} value={o.key}>
                {o.label}
              </option>
            ))}
          </select>
        </label>
        <button
          className="jp-Walnut-link"
          aria-label={sort.dir === 'asc' ? 'Ascending; switch to descending' : 'Descending; switch to ascending'}
          onClick={() => setSort({ key: sort.key, dir: sort.dir === 'asc' ? 'desc' : 'asc' })}
        >
          {sort.dir === 'asc' ? '▲ ascending' : '▼ descending'}
        </button>
      </div>
      <ErrorNote text={model.offersError} />
      {!model.offersLoaded && !model.offersError && <p className="jp-Walnut-muted">Asking the providers…</p>}
      {model.offersLoaded && model.offers.length === 0 && !model.offersError && (
        <p className="jp-Walnut-muted">
          No providers are configured. Start Jupyter with <code>--WalnutApp.providers</code> or set{' '}
          <code>WALNUT_PROVIDERS</code>.
        </p>
      )}
      {model.offers.length > 0 && (
        <table className="jp-Walnut-table jp-Walnut-offers" aria-label="Provider offers">
          <thead>
            <tr>
              {COLUMNS.map(c => (
                <th
                  key={c.key}
                  scope="col"
                  title={c.title}
                  className={c.num ? 'jp-Walnut-num' : undefined}
                  aria-sort={sort.key === c.key ? (sort.dir === 'asc' ? 'ascending' : 'descending') : 'none'}
                >
                  <button className="jp-Walnut-sort" onClick={() => toggle(c.key)}>
                    {c.label}
                    <span className="jp-Walnut-sortMark" aria-hidden="true">
                      {sort.key === c.key ? (sort.dir === 'asc' ? '▲' : '▼') : ''}
                    </span>
                  </button>
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {rows.map(o => (
              <OfferRow
                key={offerKey(o)}
                offer={o}
                selected={model.selectedOffer === offerKey(o)}
                onLaunch={() => props.onLaunch(offerKey(o))}
              />
            ))}
            {rows.length === 0 && (
              <tr>
                <td colSpan={COLUMNS.length} className="jp-Walnut-muted">
                  No offer matches this filter.
                </td>
              </tr>
            )}
          </tbody>
        </table>
      )}
    </Section>
  );
}

function OfferRow(props: { offer: IOffer; selected: boolean; onLaunch: () => void }) {
  const o = props.offer;
  if (!o.healthy) {
    return (
      <tr className="jp-Walnut-offer jp-mod-unhealthy">
        <td>
          <span className="jp-Walnut-health jp-mod-down" role="img" aria-label="unreachable" />
          {o.provider_url}
        </td>
        <td colSpan={3} className="jp-Walnut-muted">
          Unreachable: {o.error ?? 'no answer'}
          {o.last_seen ? ` · last seen ${new Date(o.last_seen * 1000).toLocaleString()}` : ''}
        </td>
      </tr>
    );
  }
  const hour = offerPricePerHour(o);
  const rel = reliabilityLabel(o);
  const full = !o.available || (o.free_session_slots ?? 0) <= 0;
  return (
    <tr
      className={`jp-Walnut-offer${props.selected ? ' jp-mod-selected' : ''}`}
      data-offer={offerKey(o)}
      onDoubleClick={props.onLaunch}
    >
      <td>
        <div className="jp-Walnut-strong">
          <span
            className={`jp-Walnut-health ${full ? 'jp-mod-busy' : 'jp-mod-up'}`}
            role="img"
            aria-label={full ? 'healthy, full' : 'healthy'}
            title={full ? 'Healthy, no free capacity' : 'Healthy'}
          />
          {o.node}
          <span className="jp-Walnut-muted jp-Walnut-normal">
            {' '}
            · {o.region} · {o.shape}
          </span>
        </div>
        <div>
          {describeHardware(o)}
          {o.gpus ? ` · ${formatMemory(o.gpu_memory_mb)} VRAM` : ''}
        </div>
        <div className="jp-Walnut-muted">
          {o.cpus} CPU · {formatMemory(o.memory_mb)} RAM
        </div>
        <button
          className="jp-Walnut-link jp-Walnut-launchLink"
          onClick={props.onLaunch}
          disabled={full}
          aria-label={`Launch on ${o.node} ${o.shape}`}
        >
          Launch…
        </button>
      </td>
      <td className="jp-Walnut-num" title={hour === null ? '' : `${formatSui(hour)} per hour`}>
        <div className="jp-Walnut-strong">{hour === null ? 'n/a' : formatSui(hour, { unit: false, minDecimals: 2 })}</div>
        <div className="jp-Walnut-muted" title="Measured latency">
          {o.latency_ms === undefined ? 'n/a' : `${Math.round(o.latency_ms)} ms`}
        </div>
      </td>
      <td className="jp-Walnut-num">{o.free_session_slots ?? 'n/a'}</td>
      <td className="jp-Walnut-num" title={rel.title} data-testid="walnut-reliability">
        <span className={`jp-Walnut-score jp-mod-${rel.tone}`}>{rel.text}</span>
        {o.verified === false && <div className="jp-Walnut-score jp-mod-bad">check failed</div>}
      </td>
    </tr>
  );
}

// ---------------------------------------------------------------------------------------
// Launch

function LaunchSection(props: { model: WalnutModel; actions: IPanelActions }) {
  const { model } = props;
  const healthy = model.offers.filter(o => o.healthy);
  const selectedKey = model.selectedOffer ?? (healthy[0] ? offerKey(healthy[0]) : '');
  const offer = healthy.find(o => offerKey(o) === selectedKey);
  const [image, setImage] = React.useState('');
  const [mode, setMode] = React.useState<'budget' | 'duration'>('budget');
  const [budget, setBudget] = React.useState('0.05');
  const [minutes, setMinutes] = React.useState('30');
  const launching = model.launch !== null && model.launch.phase === 'running';

  let parseProblem: string | undefined;
  let budgetMist: bigint | null = null;
  let maxSeconds: number | null = null;
  if (mode === 'budget') {
    try {
      budgetMist = parseSui(budget);
    } catch (e) {
      parseProblem = 'Enter the budget in SUI, for example 0.5.';
    }
  } else {
    const m = Number(minutes);
    if (!Number.isFinite(m) || m <= 0) {
      parseProblem = 'Enter the maximum duration in minutes.';
    } else {
      maxSeconds = Math.round(m * 60);
    }
  }
  const balance =
    model.wallet?.balance_mist === undefined || model.wallet?.balance_mist === null ? null : toMist(model.wallet.balance_mist);
  const quote = offer && !parseProblem ? launchQuote(offer, { budgetMist, maxSeconds }, balance) : null;
  const images = offer?.images?.length ? offer.images : ['python'];
  const chosenImage = images.includes(image) ? image : images[0];

  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    if (!offer || !quote || quote.problem) {
      return;
    }
    const request = {
      provider_url: offer.provider_url,
      shape: offer.shape ?? '',
      image: chosenImage,
      ...(mode === 'budget' ? { budget_mist: Number(budgetMist) } : { max_seconds: maxSeconds! })
    };
    try {
      const s = await model.launchSession(request);
      Notification.success(`Session on ${s.node} is running. Its kernel is ready to use.`, {
        autoClose: 6000,
        actions: [{ label: 'Open notebook', callback: () => props.actions.openNotebook(s) }]
      });
    } catch (err) {
      // the progress below says at which step, and whether anything was charged
      Notification.error(`Launch failed: ${errorText(err)}`, { autoClose: 10000 });
    }
  };

  return (
    <Section id="jp-Walnut-launch" title="Launch">
      {healthy.length === 0 ? (
        <p className="jp-Walnut-muted">No healthy offer to launch on.</p>
      ) : (
        <form className="jp-Walnut-form" onSubmit={e => void submit(e)} aria-describedby="jp-Walnut-quote">
          <label>
            <span>Offer</span>
            <select
              className="jp-mod-styled"
              value={selectedKey}
              disabled={launching}
              onChange={e => {
                model.selectedOffer = e.target.value;
                model.notify();
              }}
            >
              {healthy.map(o => (
                <option key={offerKey(o)} value={offerKey(o)}>
                  {o.node} · {o.shape} · {describeHardware(o)} ·{' '}
                  {formatSui(offerPricePerHour(o) ?? 0n, { minDecimals: 2 })}/h
                </option>
              ))}
            </select>
          </label>
          <label>
            <span>Image</span>
            <select className="jp-mod-styled" value={chosenImage} disabled={launching} onChange={e => setImage(e.target.value)}>
              {images.map(i => (
                <option key={i} value={i}>
                  {i}
                </option>
              ))}
            </select>
          </label>
          <fieldset className="jp-Walnut-mode" disabled={launching}>
            <legend>Limit the session by</legend>
            <label className="jp-Walnut-radio">
              <input type="radio" name="walnut-mode" checked={mode === 'budget'} onChange={() => setMode('budget')} />
              budget
            </label>
            <label className="jp-Walnut-radio">
              <input
                type="radio"
                name="walnut-mode"
                checked={mode === 'duration'}
                onChange={() => setMode('duration')}
              />
              maximum duration
            </label>
          </fieldset>
          {mode === 'budget' ? (
            <label>
              <span>Budget (SUI)</span>
              <input
                className="jp-mod-styled"
                inputMode="decimal"
                value={budget}
                disabled={launching}
                aria-label="Budget in SUI"
                onChange={e => setBudget(e.target.value)}
              />
            </label>
          ) : (
            <label>
              <span>Maximum duration (minutes)</span>
              <input
                className="jp-mod-styled"
                inputMode="numeric"
                value={minutes}
                disabled={launching}
                aria-label="Maximum duration in minutes"
                onChange={e => setMinutes(e.target.value)}
              />
            </label>
          )}
          <div id="jp-Walnut-quote" className="jp-Walnut-quote" aria-live="polite">
            {parseProblem ? (
              <span className="jp-Walnut-warn">{parseProblem}</span>
            ) : quote ? (
              <>
                <div>
                  Locks a deposit of <strong data-testid="walnut-deposit">{formatSui(quote.depositMist)}</strong>
                </div>
                <div>
                  Buys up to <strong>{formatDurationLong(quote.seconds)}</strong> at{' '}
                  {formatSui(offerPricePerHour(offer!) ?? 0n)}/h
                </div>
                <div className="jp-Walnut-muted">Unused deposit comes back when the session ends.</div>
                {quote.problem && <div className="jp-Walnut-warn">{quote.problem}</div>}
              </>
            ) : null}
          </div>
          <button
            type="submit"
            className="jp-Button jp-mod-styled jp-mod-accept"
            disabled={launching || !quote || Boolean(quote.problem) || Boolean(parseProblem)}
          >
            {launching ? 'Launching…' : 'Confirm and launch'}
          </button>
        </form>
      )}
      <LaunchProgress model={model} actions={props.actions} />
    </Section>
  );
}

function LaunchProgress(props: { model: WalnutModel; actions: IPanelActions }) {
  const launch = props.model.launch;
  const views = launchView(launch?.steps);
  const ref = React.useRef<HTMLDivElement>(null);
  const where = views.map(v => v.state).join();
  React.useEffect(() => {
    ref.current?.scrollIntoView({ block: 'nearest' });
  }, [launch?.phase, where]);
  if (!launch) {
    return null;
  }
  const failed = failedStep(launch.steps);
  return (
    <div className="jp-Walnut-progress" role="status" aria-live="polite" ref={ref}>
      {launch.phase === 'error' && (
        <div className="jp-Walnut-error">
          {failed ? `The launch failed at “${stepLabel(failed.step)}”: ` : 'The launch failed: '}
          {failed?.detail || launch.error}
          {failedBeforeCharging(failed) ? ' Nothing was charged.' : ''}
        </div>
      )}
      {launch.steps.length === 0 && launch.phase === 'running' && (
        <div className="jp-Walnut-muted">Waiting for the provider to accept the session…</div>
      )}
      {(launch.phase !== 'error' || failed) && (
        <ol>
          {views.map(v => (
            <li
              key={v.step}
              data-step={v.step}
              className={v.state === 'pending' ? '' : `jp-mod-${v.state}`}
              title={v.detail || undefined}
            >
              {v.label}
              {v.state === 'current' ? '…' : ''}
            </li>
          ))}
          {launch.phase === 'done' && <li className="jp-mod-done">Ready</li>}
        </ol>
      )}
      {(launch.phase === 'done' || launch.phase === 'error') && (
        <div className="jp-Walnut-actions">
          {launch.phase === 'done' && launch.session && (
            <button className="jp-Button jp-mod-styled jp-mod-accept" onClick={() => props.actions.openNotebook(launch.session!)}>
              Open a notebook on it
            </button>
          )}
          <button className="jp-Button jp-mod-styled jp-mod-reject" onClick={() => props.model.dismissLaunch()}>
            Dismiss
          </button>
        </div>
      )}
    </div>
  );
}

// ---------------------------------------------------------------------------------------
// Sessions

function SessionsSection(props: { model: WalnutModel; actions: IPanelActions; commands: CommandRegistry }) {
  const { model } = props;
  const active = model.sessions.filter(isActive);
  const ended = model.sessions.filter(s => !isActive(s));
  return (
    <Section id="jp-Walnut-sessions" title="Sessions">
      <ErrorNote text={model.sessionsError} />
      {active.length === 0 && <p className="jp-Walnut-muted">No session is running.</p>}
      {active.map(s => (
        <SessionCard key={s.id} session={s} model={model} actions={props.actions} commands={props.commands} />
      ))}
      {ended.length > 0 && (
        <>
          <h4 className="jp-Walnut-subheading">Ended</h4>
          <ul className="jp-Walnut-ended" aria-label="Ended sessions">
            {ended.slice(0, 20).map(s => {
              const amounts = settlementAmounts(s);
              return (
                <li key={s.id} data-session={s.id}>
                  <div className="jp-Walnut-endedHead">
                    <span className="jp-Walnut-strong">{isFailedLaunch(s) ? `Launch on ${s.node}` : s.node}</span>
                    <span className="jp-Walnut-num" data-testid="walnut-final-cost" title="Final cost">
                      {formatSui(s.cost_mist)}
                    </span>
                  </div>
                  <div className="jp-Walnut-muted">
                    {s.status === 'failed' ? 'failed' : 'stopped'}
                    {s.ended_at ? ` ${new Date(s.ended_at * 1000).toLocaleTimeString()}` : ''}
                    {s.started_at ? ` · ran ${formatDuration(elapsedSeconds(s, Date.now() / 1000))}` : ''}
                    {s.reason ? ` · ${s.reason}` : ''}
                  </div>
                  <VerificationBadge session={s} />
                  <div className="jp-Walnut-muted" data-testid="walnut-settlement">
                    {settlementLabel(s)}
                    {amounts
                      ? `: paid ${formatSui(amounts.claimedMist)}, refunded ${formatSui(amounts.refundedMist)}`
                      : ''}
                  </div>
                </li>
              );
            })}
          </ul>
        </>
      )}
    </Section>
  );
}

function SessionCard(props: { session: ISession; model: WalnutModel; actions: IPanelActions; commands: CommandRegistry }) {
  const { session: s, model } = props;
  const [topUp, setTopUp] = React.useState<string | null>(null);
  const cost = toMist(s.cost_mist);
  const budget = toMist(s.budget_mist);
  const level = budgetLevel(cost, budget);
  const history = model.usage.get(s.id) ?? [];
  const last = history[history.length - 1];
  const busy = model.busy.has(s.id);
  const stop = async () => {
    try {
      const ended = await model.stopSession(s.id);
      Notification.info(`Session on ${ended.node} stopped. Final cost ${formatSui(ended.cost_mist)}.`, {
        autoClose: 6000
      });
    } catch (e) {
      Notification.error(`Could not stop the session: ${errorText(e)}`, { autoClose: 10000 });
    }
  };
  const doTopUp = async (e: React.FormEvent) => {
    e.preventDefault();
    let amount: bigint;
    try {
      amount = parseSui(topUp ?? '');
      if (amount <= 0n) {
        throw new RangeError();
      }
    } catch {
      Notification.warning('Enter the top-up in SUI, for example 0.5.', { autoClose: 5000 });
      return;
    }
    try {
      await model.topUp(s.id, amount);
      setTopUp(null);
      Notification.success(`Added ${formatSui(amount)} to the session budget.`, { autoClose: 4000 });
    } catch (err) {
      Notification.error(`Top-up failed: ${errorText(err)}`, { autoClose: 10000 });
    }
  };
  return (
    <article className={`jp-Walnut-session jp-mod-${level}`} data-session={s.id} aria-label={`Session on ${s.node}`}>
      <div className="jp-Walnut-sessionHead">
        <div>
          <div className="jp-Walnut-strong">{s.node}</div>
          <div className="jp-Walnut-muted">
            {describeHardware(s)} · {s.cpus} CPU · {formatMemory(s.memory_mb)} · {s.image}
          </div>
        </div>
        <span className={`jp-Walnut-badge jp-mod-${s.status}`}>{s.status}</span>
      </div>
      <VerificationBadge session={s} />
      <dl className="jp-Walnut-metrics">
        <div>
          <dt>Elapsed</dt>
          <dd data-testid="walnut-elapsed">{formatDuration(s.running_seconds || elapsedSeconds(s, Date.now() / 1000))}</dd>
        </div>
        <div>
          <dt>Cost so far</dt>
          <dd data-testid="walnut-cost">{formatSui(cost)}</dd>
        </div>
        <div className="jp-Walnut-wide">
          <dt>Remaining budget</dt>
          <dd>
            {formatSui(s.remaining_mist)}
            <span className="jp-Walnut-muted jp-Walnut-normal"> · {formatDuration(remainingSeconds(s))} left</span>
          </dd>
        </div>
      </dl>
      <div
        className="jp-Walnut-budgetBar"
        role="progressbar"
        aria-label="Budget used"
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={Math.round(budgetFraction(cost, budget) * 100)}
        title={`${formatSui(cost)} of ${formatSui(budget)} used`}
      >
        <div style={{ width: `${budgetFraction(cost, budget) * 100}%` }} />
      </div>
      <UsageChart history={history} />
      <div className="jp-Walnut-usageText">
        <span>GPU {formatPct(last?.gpu)}</span>
        <span>GPU mem {last?.mem === null || last?.mem === undefined ? 'n/a' : formatMemory(last.mem)}</span>
        <span>CPU {formatPct(last?.cpu)}</span>
      </div>
      <div className="jp-Walnut-muted jp-Walnut-small">
        Deposit {formatSui(depositOf(s))} · {settlementLabel(s)} · kernel <code>{s.kernel_name}</code>
      </div>
      {topUp !== null && (
        <form className="jp-Walnut-topup" onSubmit={e => void doTopUp(e)}>
          <input
            className="jp-mod-styled"
            autoFocus
            inputMode="decimal"
            aria-label="Top-up amount in SUI"
            placeholder="SUI"
            value={topUp}
            onChange={e => setTopUp(e.target.value)}
          />
          <button type="submit" className="jp-Button jp-mod-styled jp-mod-accept" disabled={busy}>
            Add
          </button>
          <button type="button" className="jp-Button jp-mod-styled jp-mod-reject" onClick={() => setTopUp(null)}>
            Cancel
          </button>
        </form>
      )}
      <div className="jp-Walnut-actions">
        <button className="jp-Button jp-mod-styled" disabled={busy || s.status !== 'running'} onClick={() => setTopUp('0.01')}>
          Top up
        </button>
        <button
          className="jp-Button jp-mod-styled"
          disabled={s.status !== 'running'}
          onClick={() => props.actions.openNotebook(s)}
          title="A new notebook with this session's kernel"
        >
          Open notebook
        </button>
        {props.actions.canUseInCurrentNotebook() && props.actions.useInCurrentNotebook && (
          <button
            className="jp-Button jp-mod-styled"
            disabled={s.status !== 'running'}
            onClick={() => props.actions.useInCurrentNotebook!(s)}
            title="Switch the current notebook to this session's kernel"
          >
            Use in notebook
          </button>
        )}
        <button className="jp-Button jp-mod-styled jp-mod-warn" disabled={busy} onClick={() => void stop()}>
          {busy ? 'Stopping…' : 'Stop'}
        </button>
      </div>
    </article>
  );
}

function VerificationBadge(props: { session: ISession }) {
  const badge = verificationBadge(props.session);
  if (!badge) {
    return null;
  }
  return (
    <div className={`jp-Walnut-verify jp-mod-${badge.tone}`} title={badge.title} data-testid="walnut-verification">
      {badge.tone === 'bad' ? '✗' : '✓'} {badge.label}
      {badge.tone !== 'good' && <div className="jp-Walnut-muted">{badge.title}</div>}
    </div>
  );
}

function UsageChart(props: { history: { gpu: number | null; cpu: number | null }[] }) {
  const w = 220;
  const h = 36;
  const gpu = props.history.map(x => x.gpu);
  const cpu = props.history.map(x => x.cpu);
  const any = gpu.some(v => v !== null) || cpu.some(v => v !== null);
  return (
    <svg
      className="jp-Walnut-chart"
      viewBox={`0 0 ${w} ${h}`}
      preserveAspectRatio="none"
      role="img"
      aria-label={any ? 'GPU and CPU utilisation over the last two minutes' : 'No utilisation data yet'}
    >
      <line x1="0" y1={h - 0.5} x2={w} y2={h - 0.5} className="jp-Walnut-chartAxis" />
      {any ? (
        <>
          <polyline points={sparkline(cpu, w, h - 1, 100)} className="jp-Walnut-chartCpu" />
          <polyline points={sparkline(gpu, w, h - 1, 100)} className="jp-Walnut-chartGpu" />
        </>
      ) : (
        <text x={w / 2} y={h / 2 + 4} textAnchor="middle" className="jp-Walnut-chartEmpty">
          usage n/a
        </text>
      )}
    </svg>
  );
}
