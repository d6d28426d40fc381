import * as React from 'react';

import { environmentView, failedBeforeCharging, failedStep, launchView, stepLabel } from '../logic/launch';
import { WalnutModel } from '../model';
import { IPanelActions } from './actions';

/** The steps of the launch under way, or where it failed and whether anything was charged. */
export function LaunchProgress(props: { model: WalnutModel; actions: IPanelActions }) {
  const launch = props.model.launch;
  const withRequirements = Boolean(launch?.request.requirements || launch?.request.requirements_from_notebook);
  const expected = [
    ...(withRequirements ? ['environment'] : []),
    ...(launch?.request.folder_from_notebook ? ['workspace'] : [])
  ];
  const views = launchView(launch?.steps, expected);
  // the provider's own report of the install (issue #15): a count for the bar, pip's error
  const env = environmentView(launch?.session?.environment);
  const ref = React.useRef<HTMLDivElement>(null);
  const where = views.map(v => v.state).join();
  React.useEffect(() => {
    ref.current?.scrollIntoView({ block: 'nearest' });
  }, [launch?.phase, where]);
  if (!launch) {
    return null;
  }
  const failed = failedStep(launch.steps);
  const installFailed = failed?.step === 'environment';
  const pipError = installFailed ? env?.error || failed?.detail || '' : '';
  return (
    <div className="jp-Walnut-progress" role="status" aria-live="polite" ref={ref}>
      {launch.phase === 'error' && !installFailed && (
        <div className="jp-Walnut-error">
          {failed ? `The launch failed at “${stepLabel(failed.step)}”: ` : 'The launch failed: '}
          {failed?.detail || launch.error}
          {failedBeforeCharging(failed) ? ' Nothing was charged.' : ''}
        </div>
      )}
      {launch.phase === 'error' && installFailed && (
        <div className="jp-Walnut-error" data-testid="walnut-install-failed">
          Installing the requirements failed. Nothing was charged: the budget was refunded in full. pip said:
          <pre className="jp-Walnut-pipError">{pipError.replace(/^installing requirements failed: /, '')}</pre>
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
              {v.step === 'environment' && v.state !== 'failed' && (v.detail || env) && (
                <div className="jp-Walnut-envProgress" data-testid="walnut-env-progress">
                  {v.state === 'current' && env && !env.finished && (
                    <progress max={1} value={env.fraction ?? undefined} aria-label="Installing the requirements" />
                  )}
                  <span>{v.state === 'current' ? v.detail || env?.text : v.detail}</span>
                </div>
              )}
              {v.step === 'workspace' && v.detail && (
                <div className="jp-Walnut-envProgress" data-testid="walnut-folder-progress">
                  <span>{v.detail}</span>
                </div>
              )}
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
