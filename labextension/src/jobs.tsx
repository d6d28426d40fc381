import { Notification } from '@jupyterlab/apputils';
import { Poll } from '@lumino/polling';
import * as React from 'react';

import { requestAPI } from './api';
import { errorText } from './logic/errors';
import { IJob, isJobActive, jobCost, jobFraction, jobProgress, verificationLabel } from './logic/jobs';
import { parseSui } from './logic/money';
import { describeHardware } from './logic/offers';
import { WalnutModel } from './model';

/** Batch jobs: submit a notebook from the server's files, watch it, see verified results. */
export function JobsSection(props: { model: WalnutModel }): JSX.Element {
  const { model } = props;
  const [jobs, setJobs] = React.useState<IJob[]>([]);
  const [error, setError] = React.useState<string | null>(null);
  const activeRef = React.useRef(false);

  const refresh = React.useCallback(async () => {
    try {
      const data = await requestAPI<{ jobs: IJob[] }>('jobs');
      setJobs(data.jobs);
      activeRef.current = data.jobs.some(isJobActive);
      setError(null);
    } catch (e) {
      setError(`Jobs unavailable: ${errorText(e)}`);
    }
  }, []);

  React.useEffect(() => {
    // cheap while idle: fast only while a job runs, asleep while the page is hidden
    const poll = new Poll({
      factory: async () => {
        await refresh();
        poll.frequency = { ...poll.frequency, interval: activeRef.current ? 3000 : 15000 };
      },
      frequency: { interval: 3000, backoff: true, max: 60000 },
      name: 'jupyter-walnut:jobs',
      standby: 'when-hidden'
    });
    return () => poll.dispose();
  }, [refresh]);

  const cancel = async (job: IJob) => {
    try {
      await requestAPI(`jobs/${job.id}`, { method: 'DELETE' });
      await refresh();
    } catch (e) {
      Notification.error(`Could not cancel ${job.name}: ${errorText(e)}`, { autoClose: 8000 });
    }
  };

  return (
    <section className="jp-Walnut-section" id="jp-Walnut-jobs" aria-labelledby="jp-Walnut-jobs-heading">
      <div className="jp-Walnut-sectionHeader">
        <h3 id="jp-Walnut-jobs-heading">Jobs</h3>
      </div>
      {error && (
        <div className="jp-Walnut-error" role="alert">
          {error}
        </div>
      )}
      <JobForm model={model} onSubmitted={() => void refresh()} />
      {jobs.length === 0 ? (
        <p className="jp-Walnut-muted">No jobs yet. A job runs a notebook unattended on a provider.</p>
      ) : (
        <ul className="jp-Walnut-jobs" aria-label="Batch jobs">
          {jobs.map(job => (
            <JobRow key={job.id} job={job} onCancel={() => void cancel(job)} />
          ))}
        </ul>
      )}
    </section>
  );
}

function JobForm(props: { model: WalnutModel; onSubmitted: () => void }): JSX.Element {
  const offers = props.model.offers.filter(o => o.healthy && o.available !== false);
  const [path, setPath] = React.useState('');
  const [budget, setBudget] = React.useState('0.05');
  const [offer, setOffer] = React.useState('');
  const [retries, setRetries] = React.useState('2');
  const [busy, setBusy] = React.useState(false);
  let problem: string | null = null;
  let budgetMist: bigint | null = null;
  try {
    budgetMist = parseSui(budget);
    if (budgetMist <= 0n) {
      problem = 'The budget must be more than zero.';
    }
  } catch {
    problem = 'Enter the budget in SUI, for example 0.05.';
  }
  if (!path.trim()) {
    problem = problem ?? 'Name a notebook or script, relative to the file browser root.';
  }
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    if (problem || budgetMist === null) {
      return;
    }
    setBusy(true);
    try {
      const job = await requestAPI<IJob>('jobs', {
        method: 'POST',
        body: JSON.stringify({
          path: path.trim(),
          budget_mist: Number(budgetMist),
          max_retries: Number(retries) || 0,
          ...(offer ? { offer } : {})
        })
      });
      Notification.success(`Job ${job.name} submitted; it keeps running if you close this tab.`, {
        autoClose: 6000
      });
      props.onSubmitted();
    } catch (err) {
      Notification.error(`Job not submitted: ${errorText(err)} Nothing was charged.`, { autoClose: 10000 });
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="jp-Walnut-form" onSubmit={e => void submit(e)}>
      <label>
        <span>Notebook or script</span>
        <input value={path} placeholder="analysis/train.ipynb" onChange={e => setPath(e.target.value)} />
      </label>
      <label>
        <span>Offer</span>
        <select value={offer} onChange={e => setOffer(e.target.value)}>
          <option value="">cheapest available</option>
          {offers.map(o => (
            <option key={`${o.shape}@${o.provider_url}`} value={`${o.shape}@${o.provider_url}`}>
              {`${o.node ?? o.provider_url} · ${o.shape} · ${describeHardware(o)}`}
            </option>
          ))}
        </select>
      </label>
      <label>
        <span>Budget (SUI)</span>
        <input value={budget} inputMode="decimal" onChange={e => setBudget(e.target.value)} />
      </label>
      <label>
        <span>Retries on another offer if a provider fails</span>
        <input value={retries} inputMode="numeric" onChange={e => setRetries(e.target.value)} />
      </label>
      {problem && path && <p className="jp-Walnut-hint">{problem}</p>}
      <button className="jp-Button jp-mod-styled jp-mod-accept" type="submit" disabled={busy || problem !== null}>
        {busy ? 'Submitting…' : 'Submit job'}
      </button>
    </form>
  );
}

function JobRow(props: { job: IJob; onCancel: () => void }): JSX.Element {
  const { job } = props;
  const fraction = jobFraction(job);
  const verification = verificationLabel(job);
  return (
    <li className={`jp-Walnut-job jp-mod-${job.status}`} data-testid="walnut-job">
      <div className="jp-Walnut-sessionHead">
        <strong>{job.name}</strong>
        <span className="jp-Walnut-badge">{job.status}</span>
      </div>
      <div className="jp-Walnut-muted">{jobProgress(job)}</div>
      {fraction !== null && (
        <progress className="jp-Walnut-jobBar" max={1} value={fraction} aria-label="cells done" />
      )}
      <div>Cost: {jobCost(job)}</div>
      {verification && (
        <div className={job.verified === false ? 'jp-Walnut-warn' : 'jp-Walnut-muted'}>{verification}</div>
      )}
      {job.error && <div className="jp-Walnut-error">{job.error}</div>}
      {job.result_dir && (
        <div className="jp-Walnut-muted">
          Results: <code>{job.result_dir}</code>
        </div>
      )}
      {isJobActive(job) && (
        <button className="jp-Walnut-link" onClick={props.onCancel}>
          Cancel
        </button>
      )}
    </li>
  );
}
