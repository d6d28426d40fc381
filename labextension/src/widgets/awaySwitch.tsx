import { Notification } from '@jupyterlab/apputils';
import * as React from 'react';

import { awayPromise, awaySummary, defaultAwayBudget, idleCountdown, parseAwayForm } from '../logic/away';
import { errorText } from '../logic/errors';
import { formatSui, parseSui } from '../logic/money';
import { ISession } from '../logic/types';
import { WalnutModel } from '../model';

/** "Keep running while I'm away" (issue #17): a switch, its budget and time, its trust bound. */
export function AwaySwitch(props: { session: ISession; model: WalnutModel }) {
  const { session: s, model } = props;
  const summary = awaySummary(s, Date.now() / 1000);
  const [form, setForm] = React.useState<{ budget: string; hours: string } | null>(null);
  const running = s.status === 'running';
  const busy = model.busy.has(s.id);
  const turnOff = async () => {
    try {
      await model.setAway(s.id, null);
      Notification.info('Away mode off: the session stops if your server stops paying.', { autoClose: 5000 });
    } catch (e) {
      Notification.error(`Could not turn away mode off: ${errorText(e)}`, { autoClose: 10000 });
    }
  };
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    const parsed = parseAwayForm(form?.budget ?? '', form?.hours ?? '');
    if (typeof parsed === 'string') {
      Notification.warning(parsed, { autoClose: 5000 });
      return;
    }
    try {
      await model.setAway(s.id, parsed);
      setForm(null);
      Notification.success(`Away mode on. ${awayPromise(parsed.budgetMist)}`, { autoClose: 8000 });
    } catch (err) {
      Notification.error(`Could not turn away mode on: ${errorText(err)}`, { autoClose: 10000 });
    }
  };
  let promise = '';
  try {
    promise = form ? awayPromise(parseSui(form.budget)) : '';
  } catch {
    promise = 'Enter the away budget in SUI.';
  }
  const idle = idleCountdown(s);
  return (
    <div className="jp-Walnut-away" data-testid="walnut-away">
      {idle && (
        <div className="jp-Walnut-muted jp-Walnut-small" data-testid="walnut-idle-countdown">
          {idle}
        </div>
      )}
      <label className="jp-Walnut-small">
        <input
          type="checkbox"
          role="switch"
          aria-checked={summary !== null}
          checked={summary !== null || form !== null}
          disabled={!running || busy}
          onChange={e => {
            if (!e.target.checked) {
              if (summary !== null) {
                void turnOff();
              }
              setForm(null);
            } else {
              setForm({ budget: formatSui(defaultAwayBudget(s), { unit: false }), hours: '8' });
            }
          }}
        />{' '}
        Keep running while I&apos;m away
      </label>
      {summary && (
        <div className="jp-Walnut-muted jp-Walnut-small" data-testid="walnut-away-summary">
          {summary}
        </div>
      )}
      {form && !summary && (
        <form className="jp-Walnut-topup" onSubmit={e => void submit(e)}>
          <AwayInputs value={form} onChange={setForm} />
          <button type="submit" className="jp-Button jp-mod-styled jp-mod-accept" disabled={busy}>
            Turn on
          </button>
          <div className="jp-Walnut-muted jp-Walnut-small" data-testid="walnut-away-bound">
            {promise}
          </div>
        </form>
      )}
    </div>
  );
}

/** The away budget (SUI) and hours, as the session card's switch and the launch form ask. */
export function AwayInputs(props: {
  value: { budget: string; hours: string };
  onChange: (value: { budget: string; hours: string }) => void;
  disabled?: boolean;
}) {
  const { value, onChange, disabled } = props;
  return (
    <>
      <input
        className="jp-mod-styled"
        inputMode="decimal"
        aria-label="Away budget in SUI"
        value={value.budget}
        disabled={disabled}
        onChange={e => onChange({ ...value, budget: e.target.value })}
      />
      <input
        className="jp-mod-styled"
        inputMode="decimal"
        aria-label="Hours away"
        value={value.hours}
        disabled={disabled}
        onChange={e => onChange({ ...value, hours: e.target.value })}
      />
    </>
  );
}
