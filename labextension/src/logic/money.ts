/**
 * Money as the server sends it: integers of MIST (1 SUI = 10^9 MIST).
 * Every conversion here is exact (BigInt and string arithmetic, never floats).
 */

export const MIST_PER_SUI = 1_000_000_000n;
const SUI_DECIMALS = 9;

export type MistLike = bigint | number | string;

/** An exact integer amount of MIST from what JSON gave us. */
export function toMist(value: MistLike | null | undefined): bigint {
  if (value === null || value === undefined) {
    return 0n;
  }
  if (typeof value === 'bigint') {
    return value;
  }
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) {
      throw new RangeError(`not an integer amount of MIST: ${value}`);
    }
    return BigInt(value);
  }
  const text = value.trim();
  if (!/^-?\d+$/.test(text)) {
    throw new RangeError(`not an integer amount of MIST: ${JSON.stringify(value)}`);
  }
  return BigInt(text);
}

export interface IFormatOptions {
  /** Round (half away from zero) to at most this many decimals; default 9 (exact). */
  maxDecimals?: number;
  /** Pad to at least this many decimals; default 2. */
  minDecimals?: number;
  /** Append " SUI"; default true. */
  unit?: boolean;
}

/** "1.5 SUI", "0.000000001 SUI": the exact decimal value of an amount of MIST. */
export function formatSui(value: MistLike, options: IFormatOptions = {}): string {
  const maxDecimals = Math.min(options.maxDecimals ?? SUI_DECIMALS, SUI_DECIMALS);
  const minDecimals = Math.min(options.minDecimals ?? 2, maxDecimals);
  let mist = toMist(value);
  const negative = mist < 0n;
  if (negative) {
    mist = -mist;
  }
  if (maxDecimals < SUI_DECIMALS) {
    const step = 10n ** BigInt(SUI_DECIMALS - maxDecimals);
    mist = ((mist + step / 2n) / step) * step;
  }
  const whole = mist / MIST_PER_SUI;
  let frac = (mist % MIST_PER_SUI).toString().padStart(SUI_DECIMALS, '0');
  frac = frac.slice(0, maxDecimals).replace(/0+$/, '');
  if (frac.length < minDecimals) {
    frac = frac.padEnd(minDecimals, '0');
  }
  const grouped = whole.toString().replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  const text = (negative && (whole > 0n || /[1-9]/.test(frac)) ? '-' : '') + grouped + (frac ? '.' + frac : '');
  return options.unit === false ? text : `${text} SUI`;
}

/** A short form for tight places (status bar, table cells): 4 significant decimals. */
export function formatSuiShort(value: MistLike): string {
  const mist = toMist(value);
  const abs = mist < 0n ? -mist : mist;
  if (abs === 0n) {
    return '0 SUI';
  }
  // below 0.0001 SUI show enough decimals to see the amount (still exact)
  if (abs < 100_000n) {
    return formatSui(mist, { minDecimals: 0 });
  }
  return formatSui(mist, { maxDecimals: 4, minDecimals: 2 });
}

/** Parse what a user typed ("1", "0.25", "1,000.5") as SUI into exact MIST. */
export function parseSui(text: string): bigint {
  const clean = text.trim().replace(/\s*SUI$/i, '').replace(/,/g, '');
  const match = /^(\d*)(?:\.(\d*))?$/.exec(clean);
  if (!match || (match[1] === '' && (match[2] ?? '') === '')) {
    throw new RangeError(`"${text}" is not an amount of SUI`);
  }
  const frac = match[2] ?? '';
  if (frac.length > SUI_DECIMALS) {
    throw new RangeError('SUI has at most 9 decimals');
  }
  return BigInt(match[1] || '0') * MIST_PER_SUI + BigInt(frac.padEnd(SUI_DECIMALS, '0'));
}

/** The exact hourly price of a per-second rate. */
export function perHour(mistPerSecond: MistLike): bigint {
  return toMist(mistPerSecond) * 3600n;
}
