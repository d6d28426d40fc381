/** Live usage samples of a session and the tiny chart drawn from them. */

import { IUsage } from './types';

export interface ISample {
  t: number;
  gpu: number | null;
  mem: number | null;
  cpu: number | null;
}

export function toSample(usage: IUsage | null | undefined, t: number): ISample | null {
  if (!usage) {
    return null;
  }
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  return { t, gpu: num(usage.gpu_utilization_pct), mem: num(usage.gpu_memory_used_mb), cpu: num(usage.cpu_pct) };
}

/** Append keeping at most `max` samples (a new array). */
export function pushSample(history: ISample[], sample: ISample | null, max = 60): ISample[] {
  if (!sample) {
    return history;
  }
  const next = history.concat([sample]);
  return next.length > max ? next.slice(next.length - max) : next;
}

/** An SVG polyline `points` string for values in [0, maxValue], newest on the right. */
export function sparkline(values: (number | null)[], width: number, height: number, maxValue: number, slots = 60): string {
  const step = slots > 1 ? width / (slots - 1) : width;
  const offset = slots - values.length;
  const points: string[] = [];
  values.forEach((v, i) => {
    if (v === null) {
      return;
    }
    const clamped = Math.max(0, Math.min(maxValue, v));
    const x = (offset + i) * step;
    const y = height - (maxValue > 0 ? (clamped / maxValue) * height : 0);
    points.push(`${round(x)},${round(y)}`);
  });
  return points.join(' ');
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}

export function formatPct(v: number | null | undefined): string {
  return typeof v === 'number' && Number.isFinite(v) ? `${Math.round(v)}%` : 'n/a';
}
