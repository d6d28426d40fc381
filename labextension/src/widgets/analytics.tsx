import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import * as React from 'react';

import { requestAPI } from '../api';
import { earningsSeries, formatUtilisation, IHistory, IProviderHistory, spendSeries, utilisationSeries } from '../logic/analytics';
import { errorText } from '../logic/errors';
import { formatSui } from '../logic/money';
import { formatDuration } from '../logic/time';
import { BarChart, LineChart } from './charts';

/** Fetch a /walnut path again whenever `key` changes (e.g. a session ended). */
function useWalnut<T>(path: string, key: string): { data: T | null; error: string | null } {
  const [state, setState] = React.useState<{ data: T | null; error: string | null }>({ data: null, error: null });
  React.useEffect(() => {
    let live = true;
    requestAPI<T>(path).then(
      data => live && setState({ data, error: null }),
      e => live && setState(s => ({ ...s, error: errorText(e) }))
    );
    return () => {
      live = false;
    };
  }, [path, key]);
  return state;
}

function csvUrl(): string {
  return URLExt.join(ServerConnection.makeSettings().baseUrl, 'walnut', 'analytics', 'history.csv');
}

/** The renter's spend over time, recent sessions and jobs, and the CSV export. */
export function HistoryView(props: { refreshKey: string }): JSX.Element {
  const { data, error } = useWalnut<IHistory>('analytics/history', props.refreshKey);
  const spend = spendSeries(data);
  const rows = [...(data?.sessions ?? []), ...(data?.jobs ?? [])]
    .sort((a, b) => (b.started_at ?? 0) - (a.started_at ?? 0))
    .slice(0, 8);
  return (
    <div className="jp-Walnut-history">
      {error && <div className="jp-Walnut-error">{error}</div>}
      <div className="jp-Walnut-chartHead">
        <span>Spend over time</span>
        <span className="jp-Walnut-strong" data-testid="walnut-total-spend">
          {data ? formatSui(data.total_mist) : '…'}
        </span>
      </div>
      <LineChart
        values={spend.values}
        labels={spend.labels}
        titles={spend.titles}
        unit="SUI"
        label="Cumulative spend by day"
        testId="walnut-spend-chart"
      />
      {rows.length > 0 && (
        <table className="jp-Walnut-table jp-Walnut-historyTable" aria-label="Session and job history">
          <thead>
            <tr>
              <th scope="col">What</th>
              <th scope="col" className="jp-Walnut-num">
                Time
              </th>
              <th scope="col" className="jp-Walnut-num">
                Cost
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map(r => (
              <tr key={r.id} data-history={r.id}>
                <td>
                  <div className="jp-Walnut-strong">{r.kind === 'job' ? `job ${r.name}` : r.node}</div>
                  <div className="jp-Walnut-muted">
                    {r.status}
                    {r.verification ? ` · check ${r.verification}` : ''}
                  </div>
                </td>
                <td className="jp-Walnut-num">{r.duration_s === null ? 'n/a' : formatDuration(r.duration_s)}</td>
                <td className="jp-Walnut-num">{formatSui(r.cost_mist)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <a className="jp-Walnut-link" href={csvUrl()} download="walnut-history.csv">
        Export history as CSV
      </a>
    </div>
  );
}

/** Earnings and utilisation of the provider running on this machine, if there is one. */
export function ProviderView(props: { refreshKey: string; wrap: (body: JSX.Element) => JSX.Element }): JSX.Element | null {
  const { data } = useWalnut<IProviderHistory>('analytics/provider', props.refreshKey);
  if (!data?.enabled) {
    return null; // this server runs no provider: no section at all
  }
  const earned = earningsSeries(data);
  const busy = utilisationSeries(data);
  return props.wrap(
    <div className="jp-Walnut-providerStats" data-testid="walnut-provider-stats">
      <dl className="jp-Walnut-facts">
        <dt>Claimed</dt>
        <dd>{formatSui(data.claimed_mist ?? 0)}</dd>
        <dt>Pending</dt>
        <dd>{formatSui(data.pending_mist ?? 0)}</dd>
        <dt>Sessions served</dt>
        <dd>{data.sessions_served ?? 0}</dd>
        <dt>Failed starts</dt>
        <dd>{data.failed_starts ?? 0}</dd>
      </dl>
      <div className="jp-Walnut-chartHead">Earnings by day (claimed)</div>
      <BarChart values={earned.values} labels={earned.labels} titles={earned.titles} unit="SUI" label="Earnings claimed by day" testId="walnut-earnings-chart" />
      <div className="jp-Walnut-chartHead">
        <span>Utilisation by day</span>
        <span className="jp-Walnut-muted">{busy.values.length ? formatUtilisation(busy.values[busy.values.length - 1]) + ' today' : ''}</span>
      </div>
      <LineChart values={busy.values} labels={busy.labels} titles={busy.titles} unit="%" label="Utilisation by day" testId="walnut-utilisation-chart" />
    </div>
  );
}
