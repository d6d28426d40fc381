/** A session's workspace in JupyterLab (issue #16): drive names, which drives to add or
 * remove, warnings not yet shown, and the words for results and uploads. Pure functions. */

import { ISession, IWarning, IResults } from './types';

/** `walnut-<node>-<8 hex of the session id>`: a Jupyter drive name (no ':' or '/'). */
export function driveNameFor(s: Pick<ISession, 'id' | 'node'>): string {
  const node = (s.node || 'node').replace(/[^A-Za-z0-9_-]+/g, '-').slice(0, 40) || 'node';
  return `walnut-${node}-${s.id.replace(/^s-/, '').slice(0, 8)}`;
}

/** The renter server's per-session Contents API root (the Drive appends api/contents). */
export function driveBaseUrl(serverBase: string, sessionId: string): string {
  return `${serverBase.replace(/\/+$/, '')}/walnut/sessions/${encodeURIComponent(sessionId)}/`;
}

/** A session whose workspace can be browsed: running (its gateway answers). */
export function hasWorkspace(s: ISession): boolean {
  return s.status === 'running';
}

/** Which session drives to create and which to take away, given those that exist. */
export function planDrives(existing: Iterable<string>, sessions: ISession[]): { add: ISession[]; remove: string[] } {
  const open = new Set(sessions.filter(hasWorkspace).map(s => s.id));
  const have = new Set(existing);
  return {
    add: sessions.filter(s => hasWorkspace(s) && !have.has(s.id)),
    remove: [...have].filter(id => !open.has(id))
  };
}

export interface INewWarning {
  session: ISession;
  warning: IWarning;
}

/** The warnings not shown before (one per session and kind); `seen` is updated. */
export function newWarnings(seen: Set<string>, sessions: ISession[]): INewWarning[] {
  const fresh: INewWarning[] = [];
  for (const s of sessions) {
    for (const w of validWarnings(s)) {
      const key = `${s.id}:${w.kind}`;
      if (!seen.has(key)) {
        seen.add(key);
        fresh.push({ session: s, warning: w });
      }
    }
  }
  return fresh;
}

/** The session's warnings that have the fields the UI shows. */
export function validWarnings(s: ISession): IWarning[] {
  return (Array.isArray(s.warnings) ? s.warnings : []).filter(
    w => w && typeof w.kind === 'string' && typeof w.message === 'string'
  );
}

/** The latest warning of a running session, for the card and the status bar. */
export function currentWarning(s: ISession): IWarning | null {
  if (s.status !== 'running' && s.status !== 'starting') {
    return null;
  }
  const all = validWarnings(s);
  return all.length ? all[all.length - 1] : null;
}

export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n) || n < 0) {
    return 'n/a';
  }
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}

/** What the card says of a session's outputs: where they are, or why not. */
export function resultsText(r: IResults | null | undefined, nowSeconds: number): string | null {
  if (!r || typeof r.state !== 'string') {
    return null;
  }
  const count = Array.isArray(r.files) ? r.files.length : r.files;
  const size = typeof count === 'number' ? ` (${count} file${count === 1 ? '' : 's'}, ${formatBytes(r.bytes)})` : '';
  const why = r.reason ?? r.error;
  const kept =
    typeof r.kept_until === 'number' && r.kept_until > nowSeconds
      ? `, kept by the provider until ${new Date(r.kept_until * 1000).toLocaleTimeString()}`
      : '';
  const where = r.path ?? 'walnut-results/';
  switch (r.state) {
    case 'saved':
      return `Results saved to ${where}${size}`;
    case 'saved_now':
      return `Results saved now to ${where}${size}`;
    case 'pending':
    case 'saving':
      return `Fetching results into ${where}…${kept}`;
    case 'none':
      return `No results to save${why ? `: ${why}` : ''}`;
    case 'failed':
    case 'refused':
      return `Results not saved${why ? `: ${why}` : ''}${kept}`;
    case 'expired':
      return 'Results expired at the provider before they were fetched';
    case 'deleted':
      return `Results deleted at the provider${r.path ? ` (a copy stays in ${r.path})` : ''}`;
    default:
      return `Results: ${r.state}${r.path ? ` (${r.path})` : ''}`;
  }
}

/** "Uploading data.csv: 42%" for the file browser's toolbar. */
export function uploadText(name: string, fraction: number): string {
  const pct = Math.max(0, Math.min(100, Math.floor(fraction * 100)));
  return `Uploading ${name}: ${pct}%`;
}

/** A port typed by the user, or null unless it is a whole number from 1 to 65535. */
export function checkPort(text: string): number | null {
  const t = text.trim();
  if (!/^\d{1,5}$/.test(t)) {
    return null;
  }
  const port = Number(t);
  return port >= 1 && port <= 65535 ? port : null;
}

/** The renter server's page that opens a session's web app on a port (no token in it). */
export function appUrl(serverBase: string, sessionId: string, port: number): string {
  return `${driveBaseUrl(serverBase, sessionId)}proxy/${port}/`;
}
