import { IJob, jobCost, jobFraction, jobProgress, verificationLabel } from '../logic/jobs';

function job(extra: Partial<IJob> = {}): IJob {
  return {
    id: 'job-0123456789ab',
    name: 'train.ipynb',
    status: 'running',
    cost_mist: '1200000',
    budget_mist: 500_000_000,
    attempts: [],
    verified: null,
    ...extra
  };
}

describe('jobs', () => {
  it('describes progress from the current attempt', () => {
    const j = job({
      attempts: [
        { n: 1, node: 'a', status: 'failed', cell: 2, cells: 8, elapsed_s: 10 },
        { n: 2, node: 'b', status: 'running', cell: 3, cells: 8, elapsed_s: 65 }
      ]
    });
    expect(jobProgress(j)).toBe('cell 3 of 8 · 1 min 5 s · on b · attempt 2');
    expect(jobFraction(j)).toBeCloseTo(3 / 8);
  });

  it('handles jobs without attempts', () => {
    expect(jobProgress(job({ status: 'queued' }))).toBe('waiting for a provider');
    expect(jobFraction(job({ status: 'succeeded' }))).toBe(1);
    expect(jobFraction(job())).toBeNull();
  });

  it('shows cost exactly', () => {
    expect(jobCost(job())).toBe('0.0012 of 0.50 SUI');
  });

  it('labels verification', () => {
    expect(verificationLabel(job({ verified: true, status: 'succeeded' }))).toContain('verified');
    expect(verificationLabel(job({ verified: false, status: 'succeeded', verification: 'digest mismatch' }))).toBe(
      'verification FAILED: digest mismatch'
    );
    expect(verificationLabel(job())).toBe('');
  });
});
