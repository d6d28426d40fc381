/**
 * Outputs a remote kernel made while the renter's server was away (issue #17): on its
 * return the server writes them into the notebook file from the provider's journal and
 * lists the notebook in the session's `outputs_written`. A tab that stayed open still holds
 * the old document; these rules decide when it reloads.
 */
import { ISession } from './types';

export interface IOutputsWritten {
  path: string;
  /** When the server wrote them (its clock, seconds). */
  at: number;
}

/** What this page has already acted on: a notebook path -> the write it reloaded. */
export class WrittenTracker {
  /**
   * The writes not seen before. The first poll of a page only takes note: a notebook opened
   * after a write reads the file as it is.
   */
  fresh(sessions: ISession[]): IOutputsWritten[] {
    const out: IOutputsWritten[] = [];
    for (const s of sessions) {
      for (const w of s.outputs_written ?? []) {
        if (typeof w?.path !== 'string' || typeof w.at !== 'number') {
          continue;
        }
        const seen = this._seen.get(w.path);
        if (seen === undefined || w.at > seen) {
          this._seen.set(w.path, w.at);
          if (this._primed) {
            out.push(w);
          }
        }
      }
    }
    this._primed = true;
    return out;
  }

  private _seen = new Map<string, number>();
  private _primed = false;
}

/** The notebook path as the file browser has it (the server may send a leading slash). */
export function samePath(a: string, b: string): boolean {
  const strip = (p: string) => p.replace(/^\/+/, '');
  return strip(a) === strip(b);
}

export function reloadedText(path: string): string {
  return `Outputs your Walnut kernel made while you were away are now in ${path}.`;
}

export function unsavedText(path: string): string {
  return (
    `Outputs your Walnut kernel made while you were away were written to ${path}, ` +
    'which has unsaved changes here. Reload it to see them (your unsaved changes are lost).'
  );
}

/** A notebook's cells as nbformat JSON has them (only what this comparison reads). */
interface ICells {
  cells?: { cell_type?: string; id?: string; source?: string | string[] }[];
}

/**
 * Whether the open notebook differs from the file only in outputs, execution counts and
 * blank cells: then reloading it loses nothing the user wrote (running a cell marks a tab
 * unsaved).
 */
export function onlyOutputsDiffer(live: ICells, disk: ICells): boolean {
  const text = (s: string | string[] | undefined) => (Array.isArray(s) ? s.join('') : (s ?? ''));
  // a blank cell holds nothing to lose (Shift+Enter on the last cell adds one)
  const written = (nb: ICells) => (nb.cells ?? []).filter(cell => text(cell.source).trim() !== '');
  const a = written(live);
  const b = written(disk);
  return (
    a.length === b.length &&
    a.every(
      (cell, i) =>
        cell.cell_type === b[i].cell_type && (cell.id ?? null) === (b[i].id ?? null) && text(cell.source) === text(b[i].source)
    )
  );
}

/** The Walnut kernel a tab was on: reconnect to it when the tab loses its session. */
export function isWalnutKernel(name: string | undefined): boolean {
  return typeof name === 'string' && name.startsWith('walnut-s-');
}

/** How long a tab waits for its server to list a lost Walnut kernel again. */
export const REATTACH_GIVE_UP_MS = 10 * 60 * 1000;

/** The next wait between looks: doubling from 1 s, at most 10 s. */
export function nextWait(ms: number): number {
  return Math.min(Math.max(1000, ms * 2), 10_000);
}
