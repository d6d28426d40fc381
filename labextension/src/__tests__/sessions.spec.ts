import {
  activeTotals,
  budgetFraction,
  budgetLevel,
  depositOf,
  elapsedSeconds,
  isFailedLaunch,
  isSettling,
  launchQuote,
  remainingSeconds,
  sessionEvents,
  settlementAmounts,
  settlementLabel
} from '../logic/sessions';
import { pollPlan } from '../logic/polling';
import { formatDuration, formatDurationLong } from '../logic/time';
import { IOffer, ISession } from '../logic/types';
import { testSession } from './sessionFixture';

const offer: IOffer = { provider_url: 'http://p', healthy: true, shape: 's', price_mist_per_second: 1000, max_session_seconds: 3600 };

const session = (over: Partial<ISession>): ISession => testSession(over);

describe('launch quote', () => {
  it('a budget buys floor(budget / price) seconds and locks the budget', () => {
    expect(launchQuote(offer, { budgetMist: 1_500_500n })).toEqual({ seconds: 1500, depositMist: 1_500_500n });
  });
  it('caps at the provider maximum', () => {
    expect(launchQuote(offer, { budgetMist: 10_000_000_000n }).seconds).toBe(3600);
    expect(launchQuote(offer, { maxSeconds: 7200 })).toEqual({ seconds: 3600, depositMist: 3_600_000n });
  });
  it('a duration locks duration * price', () => {
    expect(launchQuote(offer, { maxSeconds: 60 })).toEqual({ seconds: 60, depositMist: 60_000n });
  });
  it('explains what cannot be launched', () => {
    expect(launchQuote(offer, { budgetMist: 999n }).problem).toMatch(/less than one second/);
    expect(launchQuote(offer, { budgetMist: 0n }).problem).toMatch(/above zero/);
    expect(launchQuote(offer, {}).problem).toMatch(/budget or a maximum duration/);
    expect(launchQuote(offer, { maxSeconds: 60 }, 59_999n).problem).toMatch(/balance/);
    expect(launchQuote(offer, { maxSeconds: 60 }, 60_000n).problem).toBeUndefined();
  });
});

describe('session arithmetic', () => {
  it('elapsed time while running and after the end', () => {
    expect(elapsedSeconds(session({}), 1042)).toBe(42);
    expect(elapsedSeconds(session({ status: 'stopped', ended_at: 1100 }), 5000)).toBe(100);
    expect(elapsedSeconds(session({ started_at: null, status: 'starting' }), 5000)).toBe(0);
  });
  it('remaining time from the remaining budget', () => {
    expect(remainingSeconds(session({}))).toBe(90);
    expect(remainingSeconds(session({ price_mist_per_second: 0 }))).toBe(Infinity);
  });
  it('budget levels', () => {
    expect(budgetLevel(0n, 100n)).toBe('ok');
    expect(budgetLevel(79n, 100n)).toBe('ok');
    expect(budgetLevel(80n, 100n)).toBe('low');
    expect(budgetLevel(95n, 100n)).toBe('critical');
    expect(budgetLevel(5n, 0n)).toBe('ok');
    expect(budgetFraction(50n, 200n)).toBe(0.25);
    expect(budgetFraction(500n, 200n)).toBe(1);
  });
  it('totals of active sessions only, with the worst level', () => {
    const t = activeTotals([
      session({ id: 'a', cost_mist: 10, budget_mist: 100 }),
      session({ id: 'b', cost_mist: 90, budget_mist: 100 }),
      session({ id: 'c', status: 'stopped', cost_mist: 1000, budget_mist: 1000 })
    ]);
    expect(t).toEqual({ active: 2, costMist: 100n, budgetMist: 200n, level: 'low' });
  });
  it('settlement labels and failed launches', () => {
    expect(settlementLabel(session({ settlement: 'open' }))).toBe('channel open');
    expect(settlementLabel(session({ status: 'stopped', settlement: 'open' }))).toBe('settling');
    expect(settlementLabel(session({ status: 'stopped', settlement: 'closing' }))).toBe('in challenge period');
    expect(settlementLabel(session({ status: 'stopped', settlement: 'settled' }))).toBe('settled');
    expect(settlementLabel(session({ status: 'stopped', settlement: 'none', channel_id: null }))).toBe('no channel');
    expect(isFailedLaunch(session({ status: 'failed', started_at: null }))).toBe(true);
    expect(isFailedLaunch(session({}))).toBe(false);
  });
});

describe('session money', () => {
  it('reads the deposit and the settled amounts from the session itself', () => {
    expect(depositOf(session({ deposit_mist: '18446744073709551615' }))).toBe(18446744073709551615n);
    const settled = session({ status: 'stopped', settlement: 'settled', claimed_mist: 30_000, refunded_mist: '70000' });
    expect(settlementAmounts(settled)).toEqual({ claimedMist: 30_000n, refundedMist: 70_000n });
    expect(isSettling(settled)).toBe(false);
  });
  it('an ended session with an open or closing channel is settling, with no amounts yet', () => {
    const closing = session({ status: 'stopped', channel_id: '0x01', settlement: 'closing' });
    expect(isSettling(closing)).toBe(true);
    expect(settlementAmounts(closing)).toBeNull();
    expect(isSettling(session({ status: 'stopped', channel_id: null, settlement: 'none' }))).toBe(false);
    expect(isSettling(session({ channel_id: '0x01' }))).toBe(false); // still running
  });
});

describe('session events', () => {
  it('tells nothing on the first load', () => {
    expect(sessionEvents(null, [session({})])).toEqual([]);
  });
  it('started, budget low, ended by the provider, failed', () => {
    const starting = session({ status: 'starting' });
    const running = session({});
    expect(sessionEvents([starting], [running]).map(e => e.kind)).toEqual(['started']);
    const low = session({ cost_mist: 85_000 });
    expect(sessionEvents([running], [low]).map(e => e.kind)).toEqual(['budget-low']);
    expect(sessionEvents([low], [session({ cost_mist: 86_000 })])).toEqual([]);
    const ended = session({ status: 'stopped', reason: 'budget exhausted' });
    expect(sessionEvents([running], [ended]).map(e => e.kind)).toEqual(['ended-by-provider']);
    const byUser = session({ status: 'stopped', reason: 'stopped by you' });
    expect(sessionEvents([running], [byUser])).toEqual([]);
    expect(sessionEvents([running], [session({ status: 'stopped', reason: 'stopped by renter' })])).toEqual([]);
    expect(sessionEvents([running], [session({ status: 'failed', reason: 'gone' })]).map(e => e.kind)).toEqual(['failed']);
  });
});

describe('durations and polling', () => {
  it('formats durations', () => {
    expect(formatDuration(5)).toBe('5s');
    expect(formatDuration(65)).toBe('1m 05s');
    expect(formatDuration(3725)).toBe('1h 02m');
    expect(formatDuration(90000)).toBe('1d 01h');
    expect(formatDuration(Infinity)).toBe('—');
    expect(formatDurationLong(5400)).toBe('1 h 30 min');
    expect(formatDurationLong(59)).toBe('59 seconds');
    expect(formatDurationLong(61)).toBe('1 min 1 s');
  });
  it('polls fast only while something runs', () => {
    expect(pollPlan(0, false).sessionsMs).toBeGreaterThan(pollPlan(1, false).sessionsMs);
    expect(pollPlan(0, true).sessionsMs).toBeLessThanOrEqual(pollPlan(1, false).sessionsMs);
  });
});
