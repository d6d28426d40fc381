import { Notification } from '@jupyterlab/apputils';
import { CommandRegistry } from '@lumino/commands';
import * as React from 'react';

import { errorText } from '../logic/errors';
import { formatSui, parseSui, toMist } from '../logic/money';
import { describeHardware, formatMemory } from '../logic/offers';
import { budgetFraction, budgetLevel, depositOf, elapsedSeconds, remainingSeconds, settlementLabel } from '../logic/sessions';
import { formatDuration } from '../logic/time';
import { ISession } from '../logic/types';
import { formatPct } from '../logic/usage';
import { currentWarning } from '../logic/workspace';
import { WalnutModel } from '../model';
import { IPanelActions } from './actions';
import { AwaySwitch } from './awaySwitch';
import { UsageChart } from './usageChart';
import { VerificationBadge } from './verificationBadge';

/** One running session: cost, budget, usage, deposit and settlement; top up, open, stop. */
export function SessionCard(props: { session: ISession; model: WalnutModel; actions: IPanelActions; commands: CommandRegistry }) {
  const { session: s, model } = props;
  const [topUp, setTopUp] = React.useState<string | null>(null);
  const cost = toMist(s.cost_mist);
  const budget = toMist(s.budget_mist);
  const level = budgetLevel(cost, budget);
  const history = model.usage.get(s.id) ?? [];
  const last = history[history.length - 1];
  const busy = model.busy.has(s.id);
  const warning = currentWarning(s);
  React.useEffect(() => {
    if (model.topUpFor === s.id) {
      model.topUpFor = null;
      setTopUp('0.01');
    }
  });
  const saveResults = async () => {
    try {
      await model.saveResults(s.id);
      Notification.success(`Saving the results of the session on ${s.node}.`, { autoClose: 5000 });
    } catch (e) {
      Notification.error(`Could not save the results: ${errorText(e)}`, { autoClose: 10000 });
    }
  };
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
      {warning && (
        <div className="jp-Walnut-warning" role="alert" data-testid="walnut-session-warning">
          {warning.message}
        </div>
      )}
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
      <AwaySwitch session={s} model={model} />
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
        {props.actions.openFiles && (
          <button
            className="jp-Button jp-mod-styled"
            disabled={s.status !== 'running'}
            onClick={() => props.actions.openFiles!(s)}
            title="Browse, upload and download the session's workspace"
          >
            Files
          </button>
        )}
        {props.actions.openTerminal && (
          <button
            className="jp-Button jp-mod-styled"
            disabled={s.status !== 'running'}
            onClick={() => props.actions.openTerminal!(s)}
            title="A shell in the session, in a JupyterLab terminal"
          >
            Terminal
          </button>
        )}
        {props.actions.openPort && (
          <button
            className="jp-Button jp-mod-styled"
            disabled={s.status !== 'running'}
            onClick={() => props.actions.openPort!(s)}
            title="Open a web app the session serves on a port (TensorBoard, Gradio, Streamlit)"
          >
            Open port…
          </button>
        )}
        <button
          className="jp-Button jp-mod-styled"
          disabled={s.status !== 'running' || model.busy.has(`results:${s.id}`)}
          onClick={() => void saveResults()}
          title="Copy the files created or changed in the workspace back now"
        >
          Save results
        </button>
        <button className="jp-Button jp-mod-styled jp-mod-warn" disabled={busy} onClick={() => void stop()}>
          {busy ? 'Stopping…' : 'Stop'}
        </button>
      </div>
    </article>
  );
}
