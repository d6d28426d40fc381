import { awayPromise, awaySummary, defaultAwayBudget, idleCountdown, parseAwayForm } from '../logic/away';
import { ISession } from '../logic/types';
import { testSession } from './sessionFixture';

const session = (over: Partial<ISession>): ISession =>
  testSession({ budget_mist: 100_000_000, remaining_mist: 90_000_000, deposit_mist: 100_000_000, ...over });

describe('away mode', () => {
  it('defaults to an hour of the price, within what is left', () => {
    expect(defaultAwayBudget(session({}))).toBe(3_600_000n);
    expect(defaultAwayBudget(session({ remaining_mist: 5_000 }))).toBe(5_000n);
  });

  it('checks the form before anything is signed', () => {
    expect(parseAwayForm('0.05', '3')).toEqual({ budgetMist: 50_000_000n, seconds: 10_800 });
    expect(parseAwayForm('lots', '3')).toMatch(/in SUI/);
    expect(parseAwayForm('0', '3')).toMatch(/more than 0/);
    expect(parseAwayForm('0.05', '0')).toMatch(/hours/);
    expect(parseAwayForm('0.05', '1000')).toMatch(/at most 168/);
  });

  it('states the trust bound in plain words', () => {
    expect(awayPromise(50_000_000n)).toBe(
      'While you are away, this provider can claim at most 0.05 SUI beyond what you have already paid; ' +
        'when you come back you pay only what was metered.'
    );
    const on = session({
      away: { until: 2000 + 3600, budget_mist: 50_000_000, top_mist: 50_009_000, claimable_mist: 50_000_000, trust_bound: '' }
    });
    expect(awaySummary(on, 2000)).toBe('Away mode on for 1h 00m more: the provider can claim at most 0.05 SUI beyond what you paid.');
    expect(awaySummary(on, 2000 + 3600)).toBeNull(); // over
    expect(awaySummary(session({ away: null }), 2000)).toBeNull();
  });

  it('counts down to the idle stop, not while a cell runs', () => {
    expect(idleCountdown(session({ idle: { idle_s: 250, threshold_s: 600, stop_in_s: 350 } }))).toBe(
      'Idle 4m 10s · stops in 5m 50s if nothing runs'
    );
    expect(idleCountdown(session({ idle: { idle_s: 0, threshold_s: 600, stop_in_s: 600 } }))).toBeNull();
    expect(idleCountdown(session({ idle: { idle_s: 250, threshold_s: 0, stop_in_s: null } }))).toBeNull();
    expect(idleCountdown(session({ idle: null }))).toBeNull();
  });
});
