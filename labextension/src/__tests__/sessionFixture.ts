import { ISession } from '../logic/types';

/** A running session as the renter server reports it, with `over` on top (tests only). */
export function testSession(over: Partial<ISession> = {}): ISession {
  return {
    id: 's-0000000000000001', provider_url: 'http://p', node: 'demo', shape: 's', image: 'python', gpus: 0, cpus: 1,
    memory_mb: 1024, price_mist_per_second: 1000, max_seconds: 100, budget_mist: 100_000, status: 'running', reason: '',
    created_at: 1000, started_at: 1000, ended_at: null, running_seconds: 10, cost_mist: 10_000, remaining_mist: 90_000,
    kernel_name: 'walnut-s-0000000000000001', settlement: 'open', deposit_mist: 100_000, voucher_mist: 9_000,
    claimed_mist: 0, refunded_mist: 0, ...over
  };
}
