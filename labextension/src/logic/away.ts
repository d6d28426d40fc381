/** Away mode (issue #17): what the session card's switch says and sends. */

import { formatSui, parseSui, toMist } from './money';
import { formatDuration } from './time';
import { ISession } from './types';

/** A default away budget: one hour of the session's price, within what is left of its budget. */
export function defaultAwayBudget(s: ISession): bigint {
  const hour = toMist(s.price_mist_per_second) * 3600n;
  const left = toMist(s.remaining_mist);
  return hour < left ? hour : left;
}

/** The form's input, checked: a positive SUI amount and 1 min to 7 days, or the reason not. */
export function parseAwayForm(budgetSui: string, hours: string): { budgetMist: bigint; seconds: number } | string {
  let budgetMist: bigint;
  try {
    budgetMist = parseSui(budgetSui);
  } catch {
    return 'Enter the away budget in SUI, for example 0.05.';
  }
  if (budgetMist <= 0n) {
    return 'The away budget must be more than 0 SUI.';
  }
  const h = Number(hours);
  if (!Number.isFinite(h) || h * 3600 < 60 || h > 168) {
    return 'Enter how long you will be away, in hours (at most 168).';
  }
  return { budgetMist, seconds: Math.round(h * 3600) };
}

/** The switch's state line while away mode is on, or null when off or over. */
export function awaySummary(s: ISession, nowSeconds: number): string | null {
  const away = s.away;
  if (!away || away.until <= nowSeconds) {
    return null;
  }
  return (
    `Away mode on for ${formatDuration(away.until - nowSeconds)} more: ` +
    `the provider can claim at most ${formatSui(away.claimable_mist)} beyond what you paid.`
  );
}

/** The plain-words bound shown before turning it on. */
export function awayPromise(budgetMist: bigint): string {
  return (
    `While you are away, this provider can claim at most ${formatSui(budgetMist)} ` +
    'beyond what you have already paid; when you come back you pay only what was metered.'
  );
}

/** The idle countdown (issue #17): "Idle 4m 10s · stops in 5m 50s if nothing runs", or null
 *  while a cell runs (the provider's clock is at 0) or when the session never stops idle. */
export function idleCountdown(s: ISession): string | null {
  const idle = s.idle;
  if (!idle || idle.stop_in_s === null || idle.idle_s <= 0) {
    return null;
  }
  return `Idle ${formatDuration(idle.idle_s)} · stops in ${formatDuration(idle.stop_in_s)} if nothing runs`;
}
