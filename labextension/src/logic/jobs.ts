/** Batch jobs as the sidebar shows them (GET /walnut/jobs, see extension/jobs_handlers.py). */

import { formatSui, toMist } from './money';
import { formatDurationLong } from './time';

export type JobStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface IJobAttempt {
  n: number;
  node?: string | null;
  status: string;
  cell?: number | null;
  cells?: number | null;
  elapsed_s?: number | null;
  cost_mist?: number | string | null;
  error?: string | null;
}

export interface IJob {
  id: string;
  name: string;
  status: JobStatus;
  cost_mist: number | string;
  budget_mist: number | string;
  attempts: IJobAttempt[];
  verified: boolean | null;
  verification?: string | null;
  metrics?: Record<string, unknown> | null;
  result_dir?: string | null;
  error?: string | null;
}

export function isJobActive(job: IJob): boolean {
  return job.status === 'queued' || job.status === 'running';
}

/** The attempt that speaks for the job now: the last one. */
export function currentAttempt(job: IJob): IJobAttempt | null {
  return job.attempts.length ? job.attempts[job.attempts.length - 1] : null;
}

/** "cell 3 of 8 · 1 min 5 s on node-a", or a plain status when nothing runs. */
export function jobProgress(job: IJob): string {
  const attempt = currentAttempt(job);
  if (!attempt) {
    return job.status === 'queued' ? 'waiting for a provider' : job.status;
  }
  const parts: string[] = [];
  if (attempt.cells) {
    parts.push(`cell ${attempt.cell ?? 0} of ${attempt.cells}`);
  }
  if (attempt.elapsed_s !== null && attempt.elapsed_s !== undefined) {
    parts.push(formatDurationLong(Math.round(attempt.elapsed_s)));
  }
  if (attempt.node) {
    parts.push(`on ${attempt.node}`);
  }
  if (job.attempts.length > 1) {
    parts.push(`attempt ${attempt.n}`);
  }
  return parts.join(' · ') || job.status;
}

/** Fraction of cells done, 0..1, for a progress bar; null when unknown. */
export function jobFraction(job: IJob): number | null {
  const attempt = currentAttempt(job);
  if (!attempt || !attempt.cells) {
    return job.status === 'succeeded' ? 1 : null;
  }
  return Math.max(0, Math.min(1, (attempt.cell ?? 0) / attempt.cells));
}

/** "0.0012 of 0.5 SUI", exact from MIST. */
export function jobCost(job: IJob): string {
  const cost = formatSui(toMist(job.cost_mist), { unit: false });
  return `${cost} of ${formatSui(toMist(job.budget_mist))}`;
}

export function verificationLabel(job: IJob): string {
  if (job.verified === true) {
    return 'results verified (provider signature)';
  }
  if (job.verified === false) {
    return `verification FAILED${job.verification ? `: ${job.verification}` : ''}`;
  }
  return isJobActive(job) ? '' : 'not verified';
}
