import { Notification } from '@jupyterlab/apputils';
import * as React from 'react';

import { awayPromise, parseAwayForm } from '../logic/away';
import { errorText } from '../logic/errors';
import { formatSui, parseSui, toMist } from '../logic/money';
import { installBillingText, MAX_REQUIREMENTS_BYTES } from '../logic/launch';
import { describeHardware, offerKey, offerPricePerHour } from '../logic/offers';
import { launchQuote } from '../logic/sessions';
import { formatDurationLong } from '../logic/time';
import { IFolderPlan } from '../logic/types';
import { WalnutModel } from '../model';
import { IPanelActions } from './actions';
import { AwayInputs } from './awaySwitch';
import { LaunchProgress } from './launchProgress';
import { Section } from './section';

/** The launch form: offer, image, budget or duration, the deposit quote; then the progress. */
export function LaunchSection(props: { model: WalnutModel; actions: IPanelActions }) {
  const { model } = props;
  const healthy = model.offers.filter(o => o.healthy);
  const selectedKey = model.selectedOffer ?? (healthy[0] ? offerKey(healthy[0]) : '');
  const offer = healthy.find(o => offerKey(o) === selectedKey);
  const [image, setImage] = React.useState('');
  const [mode, setMode] = React.useState<'budget' | 'duration'>('budget');
  const [budget, setBudget] = React.useState('0.05');
  const [minutes, setMinutes] = React.useState('30');
  // requirements the provider installs first (issue #15): none, typed, or a notebook's imports
  const [reqMode, setReqMode] = React.useState<'none' | 'text' | 'notebook'>('none');
  const [reqText, setReqText] = React.useState('');
  const [reqNotebook, setReqNotebook] = React.useState<string | null>(null);
  const notebookPath = reqNotebook ?? props.actions.currentNotebookPath?.() ?? '';
  const launching = model.launch !== null && model.launch.phase === 'running';
  // the current notebook's folder sent to the workspace first (issue #16), its size shown
  const currentNotebook = props.actions.currentNotebookPath?.() ?? '';
  const [sendFolder, setSendFolder] = React.useState(false);
  // away mode from the start (issue #17): its budget and time, its trust bound in words
  const [awayOn, setAwayOn] = React.useState(false);
  const [awayInput, setAwayInput] = React.useState({ budget: '0.01', hours: '8' });
  const away = awayOn ? parseAwayForm(awayInput.budget, awayInput.hours) : null;
  const [folderPlan, setFolderPlan] = React.useState<{ path: string; plan?: IFolderPlan; error?: string } | null>(null);
  React.useEffect(() => {
    if (!sendFolder || !currentNotebook || folderPlan?.path === currentNotebook) {
      return;
    }
    setFolderPlan({ path: currentNotebook });
    model
      .folderPlan(currentNotebook)
      .then(plan => setFolderPlan({ path: currentNotebook, plan }))
      .catch(e => setFolderPlan({ path: currentNotebook, error: errorText(e) }));
  }, [sendFolder, currentNotebook]);
  const folder = sendFolder && currentNotebook && folderPlan?.path === currentNotebook ? folderPlan : null;

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
  if (!parseProblem && reqMode === 'text' && new TextEncoder().encode(reqText).length > MAX_REQUIREMENTS_BYTES) {
    parseProblem = 'The requirements are larger than 64 KiB.';
  } else if (!parseProblem && reqMode === 'text' && !reqText.trim()) {
    parseProblem = 'Enter the requirements, one a line (for example pandas==2.2.3).';
  } else if (!parseProblem && reqMode === 'notebook' && !notebookPath.trim()) {
    parseProblem = 'Enter the path of the notebook whose imports to install.';
  }
  if (!parseProblem && sendFolder && currentNotebook) {
    if (!folder?.plan && !folder?.error) {
      parseProblem = 'Measuring the folder…';
    } else if (folder.error) {
      parseProblem = `The folder cannot be sent: ${folder.error}`;
    } else if (!folder.plan!.fits) {
      parseProblem = `The folder is too large to send: ${folder.plan!.text}. Leave files out with .walnutignore.`;
    }
  }
  if (!parseProblem && typeof away === 'string') {
    parseProblem = away;
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
      ...(mode === 'budget' ? { budget_mist: Number(budgetMist) } : { max_seconds: maxSeconds! }),
      ...(reqMode === 'text' ? { requirements: reqText } : {}),
      ...(reqMode === 'notebook' ? { requirements_from_notebook: notebookPath.trim() } : {}),
      ...(sendFolder && currentNotebook ? { folder_from_notebook: currentNotebook } : {}),
      ...(away && typeof away !== 'string' ? { away: { budget_mist: away.budgetMist.toString(), seconds: away.seconds } } : {})
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
          <fieldset className="jp-Walnut-mode jp-Walnut-requirements" disabled={launching}>
            <legend>Requirements installed before the kernel starts</legend>
            <label className="jp-Walnut-radio">
              <input type="radio" name="walnut-req" checked={reqMode === 'none'} onChange={() => setReqMode('none')} />
              none
            </label>
            <label className="jp-Walnut-radio">
              <input type="radio" name="walnut-req" checked={reqMode === 'text'} onChange={() => setReqMode('text')} />
              these packages
            </label>
            <label className="jp-Walnut-radio">
              <input
                type="radio"
                name="walnut-req"
                checked={reqMode === 'notebook'}
                onChange={() => setReqMode('notebook')}
              />
              what a notebook imports
            </label>
          </fieldset>
          {reqMode === 'text' && (
            <label>
              <span>Requirements (pip format, one a line)</span>
              <textarea
                className="jp-mod-styled jp-Walnut-requirementsText"
                rows={4}
                spellCheck={false}
                placeholder={'pandas==2.2.3\nscikit-learn>=1.5'}
                value={reqText}
                disabled={launching}
                aria-label="Requirements"
                onChange={e => setReqText(e.target.value)}
              />
            </label>
          )}
          {reqMode === 'notebook' && (
            <label>
              <span>Notebook (its imports, at this server’s versions)</span>
              <input
                className="jp-mod-styled"
                value={notebookPath}
                disabled={launching}
                aria-label="Notebook whose imports to install"
                onChange={e => setReqNotebook(e.target.value)}
              />
            </label>
          )}
          {currentNotebook && (
            <label className="jp-Walnut-radio jp-Walnut-sendFolder">
              <input
                type="checkbox"
                checked={sendFolder}
                disabled={launching}
                aria-label="Send the notebook's folder to the session"
                onChange={e => setSendFolder(e.target.checked)}
              />
              send the folder of {currentNotebook.split('/').pop()} first, so relative paths work
            </label>
          )}
          <label className="jp-Walnut-radio">
            <input
              type="checkbox"
              checked={awayOn}
              disabled={launching}
              aria-label="Keep running while I'm away"
              onChange={e => setAwayOn(e.target.checked)}
            />
            keep running while I&apos;m away
          </label>
          {awayOn && (
            <div className="jp-Walnut-topup">
              <AwayInputs value={awayInput} onChange={setAwayInput} disabled={launching} />
            </div>
          )}
          {away && typeof away !== 'string' && (
            <div className="jp-Walnut-muted" data-testid="walnut-away-bound">
              {awayPromise(away.budgetMist)}
            </div>
          )}
          {folder?.plan && (
            <div className="jp-Walnut-muted" data-testid="walnut-folder-plan">
              Sends {folder.plan.folder || 'the server root'}: {folder.plan.text}
              {folder.plan.ignored ? ` (${folder.plan.ignored} ignored)` : ''}
            </div>
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
                {reqMode !== 'none' && (
                  <div data-testid="walnut-install-billing">{installBillingText(offer!.bills_install)}</div>
                )}
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
