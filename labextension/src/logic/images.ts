/**
 * An offer's images and their key package versions (jupyter_walnut/renter/offer_filters.py):
 * chip labels such as "scipy · py3.11 · torch 2.13 (CPU)" and package clauses of the offer
 * filter ("torch>=2", "py>=3.11", "cuda"). The provider wrote these strings: they are only
 * shown as text (React escapes them) and compared, and are cut to a bounded length here too.
 */

import { IImageInfo, IOffer } from './types';

export type VersionOp = '>=' | '<=' | '>' | '<' | '=';

export interface IPackageClause {
  /** Lower-case package name ("torch", "python", "cuda", "scikit-learn"). */
  name: string;
  /** Absent: the package only has to be present. */
  op?: VersionOp;
  version?: number[];
}

const MAX_TEXT = 64;
const ALIASES: { [alias: string]: string } = { py: 'python', sklearn: 'scikit-learn' };

function cut(text: unknown): string {
  return typeof text === 'string' ? text.slice(0, MAX_TEXT) : '';
}

/** Release numbers of a version string: "2.13.0+cpu" is [2, 13, 0]; junk is null. */
export function releaseOf(version: unknown): number[] | null {
  if (typeof version !== 'string') {
    return null;
  }
  const m = /^v?(\d+(?:\.\d+)*)/.exec(version.trim());
  return m ? m[1].split('.').slice(0, 8).map(Number) : null;
}

function compareRelease(a: number[], b: number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    if (x !== y) {
      return x < y ? -1 : 1;
    }
  }
  return 0;
}

export function normalisePackage(name: string): string {
  const lower = name.toLowerCase().replace(/[_.]+/g, '-');
  return ALIASES[lower] ?? lower;
}

/** The packages of an image by normalised name; null when the offer does not say. */
function packagesOf(image: IImageInfo): Map<string, string | null> | null {
  if (!image.packages || typeof image.packages !== 'object') {
    return null;
  }
  const out = new Map<string, string | null>();
  for (const [k, v] of Object.entries(image.packages)) {
    out.set(normalisePackage(k), typeof v === 'string' ? v : null);
  }
  return out;
}

/** Whether an image has the package at a version the clause accepts ("=" is a prefix:
 * torch=2.13 accepts 2.13.1). Unknown versions never match. */
export function imageMeets(image: IImageInfo, clause: IPackageClause): boolean {
  const packages = packagesOf(image);
  const release = releaseOf(packages?.get(clause.name));
  if (release === null) {
    return false;
  }
  if (!clause.op || !clause.version) {
    return true;
  }
  if (clause.op === '=') {
    return clause.version.every((n, i) => release[i] === n);
  }
  return meetsOp(compareRelease(release, clause.version), clause.op);
}

/** Whether a comparison's result (-1, 0, 1: left against right) satisfies `op`. */
export function meetsOp(c: number, op: VersionOp): boolean {
  switch (op) {
    case '>=':
      return c >= 0;
    case '<=':
      return c <= 0;
    case '>':
      return c > 0;
    case '<':
      return c < 0;
    case '=':
      return c === 0;
  }
}

/** The images of an offer that meet every clause (all of them when there is none). */
export function matchingImages(offer: IOffer, clauses: IPackageClause[]): IImageInfo[] {
  const images = offer.image_details ?? [];
  return images.filter(i => clauses.every(c => imageMeets(i, c)));
}

/** Whether any offer lists the package at all: a clause on one none lists is likely a typo. */
export function anyImageLists(offers: IOffer[], name: string): boolean {
  return offers.some(o => (o.image_details ?? []).some(i => packagesOf(i)?.has(name)));
}

function majorMinor(version: unknown): string | null {
  const r = releaseOf(version);
  return r ? r.slice(0, 2).join('.') : null;
}

/** "scipy · py3.11 · torch 2.13 (CPU)"; an image without a package list is its name. */
export function imageLabel(image: IImageInfo): string {
  const parts = [cut(image.name)];
  const packages = packagesOf(image);
  if (packages) {
    const py = majorMinor(packages.get('python'));
    if (py) {
      parts.push(`py${py}`);
    }
    const torch = majorMinor(packages.get('torch'));
    const cuda = cut(packages.get('cuda'));
    if (torch) {
      parts.push(`torch ${torch} (${cuda ? `CUDA ${cuda}` : 'CPU'})`);
    } else if (cuda) {
      parts.push(`CUDA ${cuda}`);
    }
  }
  return parts.join(' · ');
}

/** The tooltip of a chip: the description, then every listed package and version. */
export function imageTitle(image: IImageInfo): string {
  const lines = [cut(image.description ?? '')].filter(Boolean);
  const packages = packagesOf(image);
  if (packages) {
    for (const [k, v] of [...packages.entries()].slice(0, 32)) {
      lines.push(`${cut(k)} ${v === null ? '(none)' : cut(v)}`);
    }
  } else {
    lines.push('package versions not listed by this provider');
  }
  return lines.join('\n');
}
