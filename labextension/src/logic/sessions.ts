/** Session arithmetic: launch quotes, elapsed time, budget levels, and what changed. */

import { toMist } from './money';
import { IOffer, ISession, Settlement } from './types';

export const ACTIVE_STATUSES = ['starting', 'running'];

export function isActive(s: ISession): boolean {
  return ACTIVE_STATUSES.includes(s.status);
}

export interface IQuote {
  /** Seconds of compute the deposit buys (capped by the provider's maximum). */
  seconds: number;
  /** What the payment channel locks. */
  depositMist: bigint;
  /** Why this launch cannot be done, in words; undefined when it can. */
  problem?: string;
}

/**
 * What a launch will lock and buy: the server's own rule (renter/manager.py `launch`):
 * a budget buys floor(budget / price) seconds, capped at the provider's maximum session;
 * a duration locks duration * price.
 */
export function launchQuote(
  offer: IOffer,
  request: { budgetMist?: bigint | null; maxSeconds?: number | null },
  balanceMist?: bigint | null
): IQuote {
  const price = toMist(offer.price_mist_per_second ?? 0);
  const cap = offer.max_session_seconds ?? Number.MAX_SAFE_INTEGER;
  let seconds: number;
  let deposit: bigint;
  if (request.budgetMist !== undefined && request.budgetMist !== null) {
    if (request.budgetMist <= 0n) {
      return { seconds: 0, depositMist: 0n, problem: 'Enter a budget above zero.' };
    }
    const bought = price > 0n ? request.budgetMist / price : BigInt(cap);
    seconds = Number(bought < BigInt(cap) ? bought : BigInt(cap));
    deposit = request.budgetMist;
    if (seconds < 1) {
      return {
        seconds: 0,
        depositMist: deposit,
        problem: 'This budget buys less than one second on this offer.'
      };
    }
  } else if (request.maxSeconds !== undefined && request.maxSeconds !== null) {
    if (!(request.maxSeconds > 0)) {
      return { seconds: 0, depositMist: 0n, problem: 'Enter a duration above zero.' };
    }
    seconds = Math.min(Math.floor(request.maxSeconds), cap);
    deposit = BigInt(seconds) * price;
  } else {
    return { seconds: 0, depositMist: 0n, problem: 'Enter a budget or a maximum duration.' };
  }
  const quote: IQuote = { seconds, depositMist: deposit };
  if (balanceMist !== undefined && balanceMist !== null && deposit > balanceMist) {
    quote.problem = 'Your wallet balance is lower than this deposit.';
  }
  return quote;
}

/** Seconds the session has been (or was) running, at `nowSeconds` (unix). */
export function elapsedSeconds(s: ISession, nowSeconds: number): number {
  if (!s.started_at) {
    return 0;
  }
  const end = s.ended_at ?? (isActive(s) ? nowSeconds : s.started_at + (s.running_seconds || 0));
  return Math.max(0, end - s.started_at);
}

/** Seconds the remaining budget still buys at the session's price. */
export function remainingSeconds(s: ISession): number {
  const price = toMist(s.price_mist_per_second);
  if (price <= 0n) {
    return Infinity;
  }
  return Number(toMist(s.remaining_mist) / price);
}

export type BudgetLevel = 'ok' | 'low' | 'critical';

/** 'low' once 80 % of the budget is used, 'critical' at 95 %. */
export function budgetLevel(costMist: bigint, budgetMist: bigint): BudgetLevel {
  if (budgetMist <= 0n) {
    return 'ok';
  }
  const permille = (costMist * 1000n) / budgetMist;
  if (permille >= 950n) {
    return 'critical';
  }
  if (permille >= 800n) {
    return 'low';
  }
  return 'ok';
}

/** Used fraction for a progress bar, 0..1 (display only). */
export function budgetFraction(costMist: bigint, budgetMist: bigint): number {
  if (budgetMist <= 0n) {
    return 0;
  }
  const permille = Number((costMist * 1000n) / budgetMist);
  return Math.min(1, Math.max(0, permille / 1000));
}

export interface ITotals {
  active: number;
  costMist: bigint;
  budgetMist: bigint;
  level: BudgetLevel;
}

/** Status-bar totals: the worst budget level of any active session. */
export function activeTotals(sessions: ISession[]): ITotals {
  const order: BudgetLevel[] = ['ok', 'low', 'critical'];
  let level: BudgetLevel = 'ok';
  let cost = 0n;
  let budget = 0n;
  let active = 0;
  for (const s of sessions) {
    if (!isActive(s)) {
      continue;
    }
    active += 1;
    const c = toMist(s.cost_mist);
    const b = toMist(s.budget_mist);
    cost += c;
    budget += b;
    const l = budgetLevel(c, b);
    if (order.indexOf(l) > order.indexOf(level)) {
      level = l;
    }
  }
  return { active, costMist: cost, budgetMist: budget, level };
}

export function depositOf(s: ISession): bigint {
  return toMist(s.deposit_mist);
}

const FINAL_SETTLEMENTS: Settlement[] = ['settled', 'lost'];

/** An ended session whose payment channel is still being settled. */
export function isSettling(s: ISession): boolean {
  return !isActive(s) && Boolean(s.channel_id) && s.settlement !== 'none' && !FINAL_SETTLEMENTS.includes(s.settlement);
}

/** "paid 0.01 SUI, refunded 0.99 SUI" once the channel is closed. */
export function settlementAmounts(s: ISession): { claimedMist: bigint; refundedMist: bigint } | null {
  if (!FINAL_SETTLEMENTS.includes(s.settlement)) {
    return null;
  }
  return { claimedMist: toMist(s.claimed_mist), refundedMist: toMist(s.refunded_mist) };
}

/** A launch the provider refused: recorded only so its deposit comes back. */
export function isFailedLaunch(s: ISession): boolean {
  return Boolean(s.extra?.launch_failed) || (s.status === 'failed' && !s.started_at);
}

export function settlementLabel(s: ISession): string {
  const labels: { [k in Settlement]: string } = {
    none: 'no channel',
    open: isActive(s) ? 'channel open' : 'settling',
    closing: 'in challenge period',
    settled: 'settled',
    lost: 'closed before the provider claimed',
    unknown: 'ledger unreachable, retrying'
  };
  return labels[s.settlement] ?? s.settlement;
}

export type SessionEvent =
  | { kind: 'started'; session: ISession }
  | { kind: 'budget-low'; session: ISession }
  | { kind: 'ended-by-provider'; session: ISession }
  | { kind: 'failed'; session: ISession };

const BY_USER = /stopped by (you|renter|the renter)|shut down/i;

/** What to tell the user about between two polls of the session list. */
export function sessionEvents(previous: ISession[] | null, next: ISession[]): SessionEvent[] {
  if (previous === null) {
    return []; // the first load tells nothing new
  }
  const before = new Map(previous.map(s => [s.id, s]));
  const events: SessionEvent[] = [];
  for (const s of next) {
    const old = before.get(s.id);
    if (s.status === 'running' && (!old || old.status === 'starting')) {
      events.push({ kind: 'started', session: s });
    }
    if (old && isActive(old) && !isActive(s)) {
      if (s.status === 'failed') {
        events.push({ kind: 'failed', session: s });
      } else if (!BY_USER.test(s.reason || '')) {
        events.push({ kind: 'ended-by-provider', session: s });
      }
    }
    if (old && isActive(s)) {
      const was = budgetLevel(toMist(old.cost_mist), toMist(old.budget_mist));
      const now = budgetLevel(toMist(s.cost_mist), toMist(s.budget_mist));
      if (was === 'ok' && now !== 'ok') {
        events.push({ kind: 'budget-low', session: s });
      }
    }
  }
  return events;
}
