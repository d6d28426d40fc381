/** Filtering and sorting the provider offers table. Prices compare exactly (BigInt). */

import {
  IPackageClause,
  matchingImages,
  meetsOp,
  normalisePackage,
  releaseOf,
  VersionOp
} from './images';
import { parseSui, perHour, toMist } from './money';
import { IOffer } from './types';

export type OfferField =
  | 'gpu_memory'
  | 'gpus'
  | 'cpus'
  | 'memory'
  | 'price'
  | 'latency'
  | 'free'
  | 'reliability';

export type Op = '>=' | '<=' | '>' | '<' | '=';

export interface IClause {
  field: OfferField;
  op: Op;
  /** GB for memory fields, SUI/h as MIST/h for price, plain numbers otherwise. */
  value: bigint | number;
}

export interface IFilter {
  clauses: IClause[];
  /** Words matched against GPU model, node, region, shape and images. */
  words: string[];
  /** Package clauses ("torch>=2", "py>=3.11", "has:pandas", "cuda"): some image must meet
   * them all. */
  packages: IPackageClause[];
  healthyOnly: boolean;
  errors: string[];
}

const FIELD_ALIASES: { [alias: string]: OfferField } = {
  gpu: 'gpu_memory',
  vram: 'gpu_memory',
  gpumem: 'gpu_memory',
  gpu_memory: 'gpu_memory',
  gpus: 'gpus',
  cpu: 'cpus',
  cpus: 'cpus',
  cores: 'cpus',
  ram: 'memory',
  mem: 'memory',
  memory: 'memory',
  price: 'price',
  cost: 'price',
  latency: 'latency',
  ping: 'latency',
  free: 'free',
  slots: 'free',
  reliability: 'reliability',
  reliable: 'reliability',
  rel: 'reliability',
  score: 'reliability'
};

const HAS = /^has:([a-z][a-z0-9_.-]*)$/i;
const CLAUSE = /^([a-z][a-z0-9_.-]*?)\s*(>=|<=|=<|=>|>|<|=|:)\s*([\d.,]+)\s*([a-z/]*)$/i;
const UNDER = /^(under|below|over|above|max|min)\s+([\d.,]+)\s*([a-z/]*)$/i;

function normOp(op: string): Op {
  switch (op) {
    case '=<':
      return '<=';
    case '=>':
      return '>=';
    case ':':
      return '>=';
    default:
      return op as Op;
  }
}

function clauseValue(field: OfferField, number: string): bigint | number {
  if (field === 'price') {
    return parseSui(number); // MIST per hour
  }
  const value = Number(number.replace(/,/g, ''));
  if (!Number.isFinite(value)) {
    throw new RangeError(`"${number}" is not a number`);
  }
  return value;
}

/**
 * Parse a filter such as "GPU >= 24 GB, under 1 SUI/h", "cpu>=4 ram>=16 eu" or
 * "gpus>=1 has:torch cuda".
 * Clauses are separated by commas, "and" or spaces; unknown words filter by text.
 */
export function parseFilter(text: string): IFilter {
  const filter: IFilter = { clauses: [], words: [], packages: [], healthyOnly: false, errors: [] };
  const normalised = text
    .replace(/==/g, '=')
    .replace(/\s+and\s+/gi, ',')
    .replace(/\s*(>=|<=|=<|=>|>|<|=)\s*/g, '$1')
    .replace(/\b(under|below|over|above|max|min)\s+/gi, '$1_')
    .replace(/(\d)\s+(gb|g|sui\/h|sui|ms)\b/gi, '$1$2');
  for (const raw of normalised.split(/[,\s]+/)) {
    const token = raw.trim().replace(/_/g, ' ');
    if (!token) {
      continue;
    }
    const has = HAS.exec(raw.trim());
    if (has) {
      // a package some image has at any version, e.g. has:torch (issue #21)
      filter.packages.push({ name: normalisePackage(has[1]) });
      continue;
    }
    const under = UNDER.exec(token);
    if (under) {
      const [, word, number, unit] = under;
      const up = ['under', 'below', 'max'].includes(word.toLowerCase());
      const field: OfferField = /ms/i.test(unit) ? 'latency' : 'price';
      try {
        filter.clauses.push({ field, op: up ? '<=' : '>=', value: clauseValue(field, number) });
      } catch (e) {
        filter.errors.push(`${token}: ${(e as Error).message}`);
      }
      continue;
    }
    const m = CLAUSE.exec(token.replace(/ /g, ''));
    if (m) {
      const field = FIELD_ALIASES[m[1].toLowerCase()];
      if (!field) {
        // not an offer field: a package of the offer's images, e.g. torch>=2
        const version = releaseOf(m[3]);
        if (version === null || m[4]) {
          filter.errors.push(`${token}: not a version`);
        } else {
          filter.packages.push({ name: normalisePackage(m[1]), op: normOp(m[2]) as VersionOp, version });
        }
        continue;
      }
      try {
        filter.clauses.push({ field, op: normOp(m[2]), value: clauseValue(field, m[3]) });
      } catch (e) {
        filter.errors.push(`${token}: ${(e as Error).message}`);
      }
      continue;
    }
    if (/^(healthy|up|ok)$/i.test(token)) {
      filter.healthyOnly = true;
      continue;
    }
    if (/^cuda$/i.test(token)) {
      filter.packages.push({ name: 'cuda' });
      continue;
    }
    filter.words.push(token.toLowerCase());
  }
  return filter;
}

function offerValue(offer: IOffer, field: OfferField): bigint | number | null {
  switch (field) {
    case 'gpu_memory':
      return offer.gpus ? (offer.gpu_memory_mb ?? 0) / 1024 : 0;
    case 'gpus':
      return offer.gpus ?? 0;
    case 'cpus':
      return offer.cpus ?? 0;
    case 'memory':
      return (offer.memory_mb ?? 0) / 1024;
    case 'price':
      return offerPricePerHour(offer);
    case 'latency':
      return offer.latency_ms ?? null;
    case 'free':
      return offer.free_session_slots ?? 0;
    case 'reliability':
      return offer.reliability ?? null; // no evidence never passes a reliability clause
  }
}

export function offerPricePerHour(offer: IOffer): bigint | null {
  if (offer.price_mist_per_hour !== undefined && offer.price_mist_per_hour !== null) {
    return toMist(offer.price_mist_per_hour);
  }
  if (offer.price_mist_per_second !== undefined && offer.price_mist_per_second !== null) {
    return perHour(offer.price_mist_per_second);
  }
  return null;
}

function compare(a: bigint | number, b: bigint | number): number {
  if (typeof a === 'bigint' || typeof b === 'bigint') {
    const x = BigInt(a);
    const y = BigInt(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  return a < b ? -1 : a > b ? 1 : 0;
}

function test(value: bigint | number, op: Op, target: bigint | number): boolean {
  return meetsOp(compare(value, target), op);
}

export function matchesFilter(offer: IOffer, filter: IFilter): boolean {
  if (filter.healthyOnly && !offer.healthy) {
    return false;
  }
  for (const clause of filter.clauses) {
    const value = offerValue(offer, clause.field);
    if (value === null || !offer.healthy) {
      return false;
    }
    if (!test(value, clause.op, clause.value)) {
      return false;
    }
  }
  if (filter.packages.length && (!offer.healthy || !matchingImages(offer, filter.packages).length)) {
    return false;
  }
  if (filter.words.length) {
    const haystack = [
      offer.gpu_model,
      offer.node,
      offer.region,
      offer.shape,
      offer.provider_url,
      offer.runtime,
      ...(offer.images ?? [])
    ]
      .filter(Boolean)
      .join(' ')
      .toLowerCase();
    return filter.words.every(w => haystack.includes(w));
  }
  return true;
}

export function filterOffers(offers: IOffer[], text: string): IOffer[] {
  const filter = parseFilter(text);
  return offers.filter(o => matchesFilter(o, filter));
}

export type SortKey =
  | 'gpu'
  | 'vram'
  | 'cpus'
  | 'memory'
  | 'price'
  | 'latency'
  | 'free'
  | 'node'
  | 'region'
  | 'reliability'
  | 'perf'
  | 'value';
export type SortDir = 'asc' | 'desc';

/** GFLOP one MIST buys: verified GFLOP/s over the price in MIST/s; null unmeasured. */
export function gflopsPerMist(offer: IOffer): number | null {
  const gflops = offer.verified_gflops;
  const price = offer.price_mist_per_second;
  if (typeof gflops !== 'number' || !(gflops > 0) || price === undefined || price === null) {
    return null;
  }
  const perSecond = Number(price);
  return perSecond > 0 ? gflops / perSecond : null;
}

/** The filter field each numeric sort key orders by (GiB and MiB order alike). */
const SORT_FIELD: Record<Exclude<SortKey, 'node' | 'region' | 'perf' | 'value'>, OfferField> = {
  gpu: 'gpus',
  vram: 'gpu_memory',
  cpus: 'cpus',
  memory: 'memory',
  price: 'price',
  latency: 'latency',
  free: 'free',
  reliability: 'reliability' // no evidence sorts last either way
};

function sortValue(offer: IOffer, key: SortKey): bigint | number | string | null {
  if (key === 'node') {
    return (offer.node ?? offer.provider_url).toLowerCase();
  }
  if (key === 'region') {
    return (offer.region ?? '').toLowerCase();
  }
  if (key === 'perf') {
    return offer.verified_gflops ?? null; // unmeasured sorts last either way
  }
  if (key === 'value') {
    return gflopsPerMist(offer);
  }
  return offerValue(offer, SORT_FIELD[key]);
}

/** A sorted copy; unhealthy providers and missing values always come last. */
export function sortOffers(offers: IOffer[], key: SortKey, dir: SortDir = 'asc'): IOffer[] {
  const sign = dir === 'asc' ? 1 : -1;
  return offers
    .map((offer, index) => ({ offer, index }))
    .sort((a, b) => {
      if (a.offer.healthy !== b.offer.healthy) {
        return a.offer.healthy ? -1 : 1;
      }
      const x = sortValue(a.offer, key);
      const y = sortValue(b.offer, key);
      if (x === null || y === null) {
        return x === y ? a.index - b.index : x === null ? 1 : -1;
      }
      let c: number;
      if (typeof x === 'string' || typeof y === 'string') {
        c = String(x).localeCompare(String(y));
      } else {
        c = compare(x, y);
      }
      return c !== 0 ? sign * c : a.index - b.index;
    })
    .map(x => x.offer);
}

/** A stable key for an offer row (a provider and one of its shapes). */
export function offerKey(offer: Pick<IOffer, 'provider_url' | 'shape'>): string {
  return `${offer.provider_url}#${offer.shape ?? ''}`;
}

export function describeHardware(offer: {
  gpus?: number;
  gpu_model?: string | null;
  gpu_memory_mb?: number | null;
}): string {
  if (!offer.gpus) {
    return 'CPU only';
  }
  const model = offer.gpu_model || 'GPU';
  return `${offer.gpus}× ${model}`;
}

export function formatMemory(mb: number | null | undefined): string {
  if (mb === null || mb === undefined) {
    return 'n/a';
  }
  if (mb >= 1024) {
    const gb = mb / 1024;
    return `${Number.isInteger(gb) ? gb : gb.toFixed(1)} GB`;
  }
  return `${mb} MB`;
}
