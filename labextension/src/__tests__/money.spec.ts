import { formatSui, formatSuiShort, parseSui, perHour, toMist } from '../logic/money';

describe('money', () => {
  it('formats MIST as exact SUI', () => {
    expect(formatSui(0)).toBe('0.00 SUI');
    expect(formatSui(1)).toBe('0.000000001 SUI');
    expect(formatSui(1_500_000_000)).toBe('1.50 SUI');
    expect(formatSui('123456789012345678901')).toBe('123,456,789,012.345678901 SUI');
    expect(formatSui(-2_000_000_001n)).toBe('-2.000000001 SUI');
    expect(formatSui(5, { unit: false, minDecimals: 0 })).toBe('0.000000005');
  });

  it('never goes through floats', () => {
    // 2^53 + 1 MIST: a float would lose the last digit
    expect(formatSui('9007199254740993')).toBe('9,007,199.254740993 SUI');
    expect(formatSui(9007199254740993n, { unit: false })).toBe('9,007,199.254740993');
  });

  it('rounds half away from zero when asked', () => {
    expect(formatSui(1_234_550_000, { maxDecimals: 4 })).toBe('1.2346 SUI');
    expect(formatSui(1_234_549_999, { maxDecimals: 4 })).toBe('1.2345 SUI');
    expect(formatSuiShort(12_345_678)).toBe('0.0123 SUI');
    expect(formatSuiShort(42)).toBe('0.000000042 SUI');
    expect(formatSuiShort(0)).toBe('0 SUI');
  });

  it('parses what users type', () => {
    expect(parseSui('1')).toBe(1_000_000_000n);
    expect(parseSui('0.25 SUI')).toBe(250_000_000n);
    expect(parseSui('.5')).toBe(500_000_000n);
    expect(parseSui('1,000.000000001')).toBe(1_000_000_000_001n);
    expect(() => parseSui('abc')).toThrow();
    expect(() => parseSui('')).toThrow();
    expect(() => parseSui('0.0000000001')).toThrow(/9 decimals/);
    expect(() => parseSui('-1')).toThrow();
  });

  it('round-trips', () => {
    for (const m of [0n, 1n, 999_999_999n, 1_000_000_000n, 123_456_789_123n]) {
      expect(parseSui(formatSui(m, { unit: false }))).toBe(m);
    }
  });

  it('computes hourly rates exactly', () => {
    expect(perHour(277_778)).toBe(1_000_000_800n);
    expect(formatSui(perHour(277_778))).toBe('1.0000008 SUI');
  });

  it('rejects non-integer MIST', () => {
    expect(() => toMist(1.5)).toThrow();
    expect(() => toMist('1e9')).toThrow();
    expect(toMist(null)).toBe(0n);
  });
});
