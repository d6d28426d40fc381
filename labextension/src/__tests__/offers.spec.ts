import { describeHardware, filterOffers, formatMemory, gflopsPerMist, parseFilter, sortOffers } from '../logic/offers';
import { IOffer } from '../logic/types';

const base = { healthy: true, runtime: 'process', images: ['python'], max_session_seconds: 86400, available: true };
const offers: IOffer[] = [
  { ...base, provider_url: 'http://a', node: 'alpha', region: 'eu-west', shape: 'a100', gpus: 1, gpu_model: 'A100', gpu_memory_mb: 40960, cpus: 8, memory_mb: 65536, price_mist_per_second: 500_000, price_mist_per_hour: 1_800_000_000, latency_ms: 40, free_session_slots: 2 },
  { ...base, provider_url: 'http://b', node: 'bravo', region: 'us-east', shape: 'rtx', gpus: 2, gpu_model: 'RTX 4090', gpu_memory_mb: 24576, cpus: 16, memory_mb: 131072, price_mist_per_second: 250_000, price_mist_per_hour: 900_000_000, latency_ms: 120, free_session_slots: 1 },
  { ...base, provider_url: 'http://c', node: 'charlie', region: 'eu-north', shape: 'cpu', gpus: 0, gpu_model: null, gpu_memory_mb: null, cpus: 4, memory_mb: 8192, price_mist_per_second: 1000, price_mist_per_hour: 3_600_000, latency_ms: 5, free_session_slots: 4 },
  { provider_url: 'http://dead', healthy: false, error: 'connection refused' }
];

const names = (list: IOffer[]) => list.map(o => o.node ?? o.provider_url);

describe('offer filter', () => {
  it('parses the example from the issue', () => {
    const f = parseFilter('GPU >= 24 GB, under 1 SUI/h');
    expect(f.errors).toEqual([]);
    expect(f.clauses).toEqual([
      { field: 'gpu_memory', op: '>=', value: 24 },
      { field: 'price', op: '<=', value: 1_000_000_000n }
    ]);
    expect(names(filterOffers(offers, 'GPU >= 24 GB, under 1 SUI/h'))).toEqual(['bravo']);
  });

  it('supports compact clauses, words and healthy', () => {
    expect(names(filterOffers(offers, 'gpu>=40gb'))).toEqual(['alpha']);
    expect(names(filterOffers(offers, 'cpu>=8 ram>=100'))).toEqual(['bravo']);
    expect(names(filterOffers(offers, 'eu'))).toEqual(['alpha', 'charlie']);
    expect(names(filterOffers(offers, 'price<0.01'))).toEqual(['charlie']);
    expect(names(filterOffers(offers, 'latency<=50 and gpus>=1'))).toEqual(['alpha']);
    expect(names(filterOffers(offers, 'healthy'))).toEqual(['alpha', 'bravo', 'charlie']);
    expect(names(filterOffers(offers, ''))).toEqual(['alpha', 'bravo', 'charlie', 'http://dead']);
  });

  it('compares prices exactly at the boundary', () => {
    expect(names(filterOffers(offers, 'price<=0.9'))).toEqual(['bravo', 'charlie']);
    expect(names(filterOffers(offers, 'price<0.9'))).toEqual(['charlie']);
    expect(names(filterOffers(offers, 'price<=0.899999999'))).toEqual(['charlie']);
  });

  it('reports what it cannot understand', () => {
    // a name that is no offer field is a package of the images (images.spec.ts)
    expect(parseFilter('colour>=3').packages).toEqual([{ name: 'colour', op: '>=', version: [3] }]);
    expect(parseFilter('torch>=2gb').errors).toEqual(['torch>=2gb: not a version']);
  });
});

describe('offer sort', () => {
  it('sorts by price, both ways, unhealthy last', () => {
    expect(names(sortOffers(offers, 'price'))).toEqual(['charlie', 'bravo', 'alpha', 'http://dead']);
    expect(names(sortOffers(offers, 'price', 'desc'))).toEqual(['alpha', 'bravo', 'charlie', 'http://dead']);
  });
  it('sorts by VRAM, latency and name', () => {
    expect(names(sortOffers(offers, 'vram', 'desc'))).toEqual(['alpha', 'bravo', 'charlie', 'http://dead']);
    expect(names(sortOffers(offers, 'latency'))).toEqual(['charlie', 'alpha', 'bravo', 'http://dead']);
    expect(names(sortOffers(offers, 'node', 'desc'))).toEqual(['charlie', 'bravo', 'alpha', 'http://dead']);
  });
  it('does not change its input', () => {
    const copy = [...offers];
    sortOffers(offers, 'free');
    expect(offers).toEqual(copy);
  });
});

describe('labels', () => {
  it('describes hardware and memory', () => {
    expect(describeHardware(offers[1])).toBe('2× RTX 4090');
    expect(describeHardware(offers[2])).toBe('CPU only');
    expect(formatMemory(24576)).toBe('24 GB');
    expect(formatMemory(1536)).toBe('1.5 GB');
    expect(formatMemory(512)).toBe('512 MB');
    expect(formatMemory(null)).toBe('n/a');
  });
});

describe('price per verified performance (issue #21)', () => {
  const measured: IOffer[] = [
    { ...base, provider_url: 'http://a', node: 'cheap-slow', price_mist_per_second: 100, verified_gflops: 50 },
    { ...base, provider_url: 'http://b', node: 'dear-fast', price_mist_per_second: 1000, verified_gflops: 2000 },
    { ...base, provider_url: 'http://c', node: 'unmeasured', price_mist_per_second: 10, verified_gflops: null },
    { ...base, provider_url: 'http://d', node: 'free', price_mist_per_second: 0, verified_gflops: 10 }
  ];

  it('is GFLOP per MIST, and nothing where unmeasured or unpriced', () => {
    expect(gflopsPerMist(measured[0])).toBeCloseTo(0.5);
    expect(gflopsPerMist(measured[1])).toBeCloseTo(2);
    expect(gflopsPerMist(measured[2])).toBeNull();
    expect(gflopsPerMist(measured[3])).toBeNull();
    expect(gflopsPerMist({ ...measured[0], verified_gflops: -1 })).toBeNull();
  });

  it('sorts by it best first, the unmeasured last either way', () => {
    expect(names(sortOffers(measured, 'value', 'desc'))).toEqual(['dear-fast', 'cheap-slow', 'unmeasured', 'free']);
    expect(names(sortOffers(measured, 'value', 'asc'))).toEqual(['cheap-slow', 'dear-fast', 'unmeasured', 'free']);
    expect(names(sortOffers(measured, 'perf', 'desc'))).toEqual(['dear-fast', 'cheap-slow', 'free', 'unmeasured']);
  });
});
