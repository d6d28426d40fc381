import { describeError, errorText, WalnutError } from '../logic/errors';
import { formatPct, pushSample, sparkline, toSample } from '../logic/usage';

describe('errors in words', () => {
  it('maps statuses to sentences', () => {
    expect(describeError(0)).toMatch(/Cannot reach the Jupyter server/);
    expect(describeError(403)).toMatch(/log in again/);
    expect(describeError(400, 'budget buys less than one second on this offer')).toBe(
      'Budget buys less than one second on this offer.'
    );
    expect(describeError(502, 'provider unreachable: connection refused')).toBe(
      'The provider did not answer as expected: provider unreachable: connection refused.'
    );
    expect(describeError(500, 'KeyError: x')).toMatch(/server log/);
  });
  it('never shows a stack trace', () => {
    const trace = 'Traceback (most recent call last):\n  File "x.py", line 3, in f\n    g()\nValueError: deposit too large';
    expect(describeError(400, trace)).toBe('Deposit too large.');
    expect(errorText(new WalnutError(400, trace))).not.toMatch(/Traceback|File "/);
    expect(errorText(new TypeError('Failed to fetch'))).toMatch(/Cannot reach/);
    expect(errorText('weird')).toBe('Something went wrong.');
  });
});

describe('usage samples', () => {
  it('keeps a bounded history and renders n/a', () => {
    let h = pushSample([], toSample({ gpu_utilization_pct: 50, cpu_pct: 10 }, 1));
    h = pushSample(h, toSample(null, 2));
    expect(h).toHaveLength(1);
    for (let i = 0; i < 100; i++) {
      h = pushSample(h, toSample({ gpu_utilization_pct: i }, i), 60);
    }
    expect(h).toHaveLength(60);
    expect(h[59].gpu).toBe(99);
    expect(h[0].mem).toBeNull();
    expect(formatPct(h[0].mem)).toBe('n/a');
    expect(formatPct(42.4)).toBe('42%');
  });
  it('draws a sparkline newest on the right', () => {
    expect(sparkline([0, 100], 10, 10, 100, 2)).toBe('0,10 10,0');
    expect(sparkline([null, 50], 10, 10, 100, 2)).toBe('10,5');
    expect(sparkline([200], 10, 10, 100, 1)).toBe('0,0');
  });
});
