import { earningsSeries, formatUtilisation, reliabilityLabel, spendSeries, suiValue, utilisationSeries, verificationBadge } from '../logic/analytics';
import { bars, linePoints, niceMax, polylinePoints } from '../logic/charts';
import { filterOffers, sortOffers } from '../logic/offers';
import { IOffer } from '../logic/types';

describe('chart geometry', () => {
  it('rounds the axis top up to 1, 2 or 5 times a power of ten', () => {
    expect(niceMax(0)).toBe(1);
    expect(niceMax(0.0031)).toBe(0.005);
    expect(niceMax(7)).toBe(10);
    expect(niceMax(120)).toBe(200);
  });

  it('places line points oldest left, highest at the top', () => {
    const pts = linePoints([0, 5, 10], ['a', 'b', 'c'], 100, 50, 10);
    expect(pts.map(p => [p.x, p.y])).toEqual([
      [0, 50],
      [50, 25],
      [100, 0]
    ]);
    expect(polylinePoints(pts)).toBe('0,50 50,25 100,0');
    expect(linePoints([3], ['x'], 100, 50, 10)[0].x).toBe(50); // one point: centred
  });

  it('draws bottom-aligned bars, clamped to the top', () => {
    const b = bars([1, 4, 8], ['a', 'b', 'c'], 90, 40, 4);
    expect(b.map(x => x.height)).toEqual([10, 40, 40]);
    expect(b.every(x => x.y + x.height === 40)).toBe(true);
    expect(b[1].x).toBeGreaterThan(b[0].x + b[0].width - 0.01);
  });
});

describe('history and provider series', () => {
  const history = {
    sessions: [],
    jobs: [],
    total_mist: 3_500_000_000,
    spend_by_day: [
      { day: '2026-11-24', cost_mist: 1_000_000_000, cumulative_mist: 1_000_000_000 },
      { day: '2026-11-25', cost_mist: 2_500_000_000, cumulative_mist: '3500000000' }
    ]
  };

  it('charts the cumulative spend in SUI with exact titles', () => {
    const s = spendSeries(history);
    expect(s.values).toEqual([1, 3.5]);
    expect(s.labels).toEqual(['11-24', '11-25']);
    expect(s.titles[1]).toBe('2026-11-25: 2.50 SUI (total 3.50 SUI)');
    expect(spendSeries(null).values).toEqual([]);
  });

  it('keeps big MIST amounts exact enough for chart heights', () => {
    expect(suiValue('123456789012345678')).toBeCloseTo(123456789.012345678, 6);
  });

  it('charts earnings and utilisation by day', () => {
    const p = {
      enabled: true,
      by_day: [
        { day: '2026-11-25', claimed_mist: 4000, pending_mist: 0, sessions: 1, failed_starts: 1, busy_seconds: 4, utilisation_pct: 0.0015 }
      ]
    };
    expect(earningsSeries(p).values).toEqual([0.000004]);
    expect(utilisationSeries(p).titles[0]).toBe('2026-11-25: <0.1% busy, 1 session(s)');
    expect(formatUtilisation(0)).toBe('0%');
    expect(formatUtilisation(42.25)).toBe('42%');
  });
});

describe('verification badge', () => {
  it('says nothing without a check', () => {
    expect(verificationBadge({ extra: {} })).toBeNull();
  });

  it('shows a failed check with its reasons', () => {
    const b = verificationBadge({ extra: { verification: { ok: false, reasons: ['the offer promises 8 CPUs, the container has 2'], warnings: [] } } });
    expect(b).toEqual({ label: 'check failed', tone: 'bad', title: 'the offer promises 8 CPUs, the container has 2' });
  });

  it('shows what was measured when it passed', () => {
    const b = verificationBadge({ extra: { verification: { ok: true, reasons: [], warnings: [], measured: { cpus: 2, gpus: 0, gflops: 98.5 } } } });
    expect(b?.label).toBe('verified');
    expect(b?.title).toBe('Measured 2 CPU, 98.5 GFLOP/s');
  });
});

describe('reliability in the offers table', () => {
  const base = { healthy: true, shape: 's', price_mist_per_second: 1000 };
  const offers: IOffer[] = [
    { ...base, provider_url: 'http://new', node: 'new', reliability: null },
    { ...base, provider_url: 'http://good', node: 'good', reliability: 91.2, verified: true },
    { ...base, provider_url: 'http://liar', node: 'liar', reliability: 40, verified: false }
  ];

  it('filters on reliability; no evidence never passes', () => {
    expect(filterOffers(offers, 'reliability >= 80').map(o => o.node)).toEqual(['good']);
    expect(filterOffers(offers, 'rel<50').map(o => o.node)).toEqual(['liar']);
  });

  it('sorts by reliability with no evidence last', () => {
    expect(sortOffers(offers, 'reliability', 'desc').map(o => o.node)).toEqual(['good', 'liar', 'new']);
    expect(sortOffers(offers, 'reliability', 'asc').map(o => o.node)).toEqual(['liar', 'good', 'new']);
  });

  it('labels the score and flags a failed check', () => {
    expect(reliabilityLabel(offers[0]).text).toBe('new');
    expect(reliabilityLabel(offers[1])).toMatchObject({ text: '91', tone: 'good' });
    expect(reliabilityLabel(offers[2]).tone).toBe('bad');
    expect(reliabilityLabel(offers[2]).title).toContain('FAILED');
  });
});
