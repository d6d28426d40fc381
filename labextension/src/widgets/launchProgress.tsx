import * as React from 'react';

import { failedBeforeCharging, failedStep, launchView, stepLabel } from '../logic/launch';
import { WalnutModel } from '../model';
import { IPanelActions } from './actions';

/** The steps of the launch under way, or where it failed and whether anything was charged. */
export function LaunchProgress(props: { model: WalnutModel; actions: IPanelActions }) {
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
