/** The history, spend and Provider sections: REST shapes and what the sidebar shows. */

import { formatSui, toMist } from './money';
import { IOffer, ISession } from './types';

export interface IHistoryRow {
  kind: 'session' | 'job';
  id: string;
  name: string;
  node: string;
  status: string;
  reason: string;
  started_at: number | null;
  ended_at: number | null;
  duration_s: number | null;
  cost_mist: number | string;
  verification: 'passed' | 'failed' | null;
  verification_reasons: string[];
}

export interface ISpendDay {
  day: string;
  cost_mist: number | string;
  cumulative_mist: number | string;
}

export interface IHistory {
  sessions: IHistoryRow[];
  jobs: IHistoryRow[];
  spend_by_day: ISpendDay[];
  total_mist: number | string;
}

export interface IProviderDay {
  day: string;
  claimed_mist: number | string;
  pending_mist: number | string;
  sessions: number;
  failed_starts: number;
  busy_seconds: number;
  utilisation_pct: number;
}

export interface IProviderHistory {
  enabled: boolean;
  sessions_served?: number;
  failed_starts?: number;
  active_sessions?: number;
  claimed_mist?: number | string;
  pending_mist?: number | string;
  metered_unpaid_mist?: number | string;
  by_day?: IProviderDay[];
}

const MIST_PER_SUI = 1_000_000_000;

/** SUI as a float, for chart heights only: labels stay exact through formatSui. */
export function suiValue(mist: number | string | bigint): number {
  const m = toMist(mist);
  return Number(m / BigInt(MIST_PER_SUI)) + Number(m % BigInt(MIST_PER_SUI)) / MIST_PER_SUI;
}

/** The cumulative spend series of the last `days` days (oldest first). */
export function spendSeries(history: IHistory | null, days = 30): { labels: string[]; values: number[]; titles: string[] } {
  const rows = (history?.spend_by_day ?? []).slice(-days);
  return {
    labels: rows.map(r => r.day.slice(5)),
    values: rows.map(r => suiValue(r.cumulative_mist)),
    titles: rows.map(r => `${r.day}: ${formatSui(r.cost_mist)} (total ${formatSui(r.cumulative_mist)})`)
  };
}

export function earningsSeries(p: IProviderHistory | null, days = 14): { labels: string[]; values: number[]; titles: string[] } {
  const rows = (p?.by_day ?? []).slice(-days);
  return {
    labels: rows.map(r => r.day.slice(5)),
    values: rows.map(r => suiValue(r.claimed_mist)),
    titles: rows.map(r => `${r.day}: ${formatSui(r.claimed_mist)} claimed, ${formatSui(r.pending_mist)} pending`)
  };
}

export function utilisationSeries(p: IProviderHistory | null, days = 14): { labels: string[]; values: number[]; titles: string[] } {
  const rows = (p?.by_day ?? []).slice(-days);
  return {
    labels: rows.map(r => r.day.slice(5)),
    values: rows.map(r => r.utilisation_pct),
    titles: rows.map(r => `${r.day}: ${formatUtilisation(r.utilisation_pct)} busy, ${r.sessions} session(s)`)
  };
}

export function formatUtilisation(pct: number): string {
  if (pct === 0) {
    return '0%';
  }
  return pct < 0.1 ? '<0.1%' : `${pct < 10 ? pct.toFixed(1) : Math.round(pct)}%`;
}

export type Tone = 'good' | 'bad' | 'neutral';

/** The verification badge of a session: what the check at its start found. */
export function verificationBadge(s: Pick<ISession, 'extra'>): { label: string; tone: Tone; title: string } | null {
  const v = s.extra?.verification;
  if (!v) {
    return null;
  }
  const reasons: string[] = [...(v.reasons ?? []), ...(v.warnings ?? [])];
  if (!v.ok) {
    return { label: 'check failed', tone: 'bad', title: reasons.join('; ') || 'verification failed' };
  }
  const m = v.measured ?? {};
  const measured = [
    m.gpus ? `${m.gpus} GPU` : null,
    m.cpus !== undefined && m.cpus !== null ? `${m.cpus} CPU` : null,
    typeof m.gflops === 'number' ? `${m.gflops} GFLOP/s` : null
  ]
    .filter(Boolean)
    .join(', ');
  return {
    label: reasons.length ? 'verified, with warnings' : 'verified',
    tone: reasons.length ? 'neutral' : 'good',
    title: [`Measured ${measured}`, ...reasons].join('; ')
  };
}

/** The reliability cell: the score, or why there is none. */
export function reliabilityLabel(o: Pick<IOffer, 'reliability' | 'verified' | 'uptime_pct'>): { text: string; title: string; tone: Tone } {
  const uptime = o.uptime_pct === null || o.uptime_pct === undefined ? 'uptime n/a' : `uptime ${o.uptime_pct}%`;
  if (o.reliability === null || o.reliability === undefined) {
    return { text: 'new', title: `No sessions with this provider yet; ${uptime}`, tone: 'neutral' };
  }
  const check = o.verified === false ? '; the last check FAILED' : o.verified ? '; the last check passed' : '';
  return {
    text: String(Math.round(o.reliability)),
    title: `Reliability ${o.reliability}/100 from sessions, checks, uptime and settlements; ${uptime}${check}`,
    tone: o.verified === false || o.reliability < 50 ? 'bad' : o.reliability >= 80 ? 'good' : 'neutral'
  };
}
