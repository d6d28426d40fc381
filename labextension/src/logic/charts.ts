/** Plain SVG chart geometry: pure functions, so the sidebar's charts are tested in jest. */

export interface IPoint {
  x: number;
  y: number;
  value: number;
  label: string;
}

export interface IBar {
  x: number;
  y: number;
  width: number;
  height: number;
  value: number;
  label: string;
}

/** A round upper bound for an axis (1, 2 or 5 times a power of ten), never 0. */
export function niceMax(max: number): number {
  if (!Number.isFinite(max) || max <= 0) {
    return 1;
  }
  const power = Math.pow(10, Math.floor(Math.log10(max)));
  for (const step of [1, 2, 5, 10]) {
    if (step * power >= max) {
      return step * power;
    }
  }
  return 10 * power;
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}

/** Points of a line chart, oldest on the left; `top` is the value at the top edge. */
export function linePoints(values: number[], labels: string[], width: number, height: number, top?: number): IPoint[] {
  const max = top ?? niceMax(Math.max(0, ...values));
  const step = values.length > 1 ? width / (values.length - 1) : 0;
  return values.map((v, i) => ({
    x: round(values.length > 1 ? i * step : width / 2),
    y: round(height - (Math.max(0, Math.min(max, v)) / max) * height),
    value: v,
    label: labels[i] ?? ''
  }));
}

export function polylinePoints(points: IPoint[]): string {
  return points.map(p => `${p.x},${p.y}`).join(' ');
}

/** Bars of equal width with a gap, bottom-aligned. */
export function bars(values: number[], labels: string[], width: number, height: number, top?: number): IBar[] {
  const max = top ?? niceMax(Math.max(0, ...values));
  const slot = values.length ? width / values.length : width;
  const gap = Math.min(2, slot * 0.2);
  return values.map((v, i) => {
    const h = round((Math.max(0, Math.min(max, v)) / max) * height);
    return { x: round(i * slot + gap / 2), y: round(height - h), width: round(slot - gap), height: h, value: v, label: labels[i] ?? '' };
  });
}
