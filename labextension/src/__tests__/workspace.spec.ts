import {
  appUrl,
  checkPort,
  currentWarning,
  driveBaseUrl,
  driveNameFor,
  formatBytes,
  newWarnings,
  planDrives,
  resultsText,
  uploadText
} from '../logic/workspace';
import { ISession } from '../logic/types';
import { testSession } from './sessionFixture';

const session = (over: Partial<ISession>): ISession =>
  testSession({ id: 's-0123456789abcdef', node: 'demo-node', kernel_name: 'walnut-s-0123456789abcdef', ...over });

describe('session drives', () => {
  it('names a drive after the node and the session, with nothing a path would split on', () => {
    expect(driveNameFor(session({}))).toBe('walnut-demo-node-01234567');
    expect(driveNameFor(session({ node: 'evil:node/../x' }))).toBe('walnut-evil-node-x-01234567');
    expect(driveNameFor(session({ node: '' }))).toBe('walnut-node-01234567');
  });

  it('roots the drive at the renter server, never at the provider', () => {
    expect(driveBaseUrl('/lab/base/', 's-0123456789abcdef')).toBe('/lab/base/walnut/sessions/s-0123456789abcdef/');
    expect(driveBaseUrl('http://h:8888/', 's-1')).toBe('http://h:8888/walnut/sessions/s-1/');
  });

  it('adds a drive for each running session and removes those that ended', () => {
    const running = session({ id: 's-1' });
    const starting = session({ id: 's-2', status: 'starting' });
    const stopped = session({ id: 's-3', status: 'stopped' });
    const plan = planDrives(['s-3', 's-4'], [running, starting, stopped]);
    expect(plan.add.map(s => s.id)).toEqual(['s-1']);
    expect(plan.remove.sort()).toEqual(['s-3', 's-4']);
    expect(planDrives(['s-1'], [running])).toEqual({ add: [], remove: [] });
  });
});

describe('warnings', () => {
  it('yields each kind of warning of a session once', () => {
    const seen = new Set<string>();
    const w = { kind: 'budget', message: '10% of the budget left', seconds_left: 60, actions: ['top_up', 'save_results'] };
    const s = session({ warnings: [w] });
    expect(newWarnings(seen, [s]).map(x => x.warning.message)).toEqual(['10% of the budget left']);
    expect(newWarnings(seen, [s])).toEqual([]);
    const later = session({ warnings: [w, { kind: 'ending', message: '2 minutes left' }] });
    expect(newWarnings(seen, [later]).map(x => x.warning.kind)).toEqual(['ending']);
    expect(currentWarning(later)?.message).toBe('2 minutes left');
  });

  it('ignores malformed warnings and those of ended sessions', () => {
    const bad = session({ warnings: [{ kind: 1 } as any, null as any] });
    expect(newWarnings(new Set(), [bad])).toEqual([]);
    expect(currentWarning(session({ status: 'stopped', warnings: [{ kind: 'a', message: 'b' }] }))).toBeNull();
    expect(currentWarning(session({ warnings: null }))).toBeNull();
  });
});

describe('results and uploads in words', () => {
  it('says where the results are, or why not', () => {
    expect(resultsText({ state: 'saved', path: 'walnut-results/s-1/', files: 3, bytes: 1_234_000 }, 0)).toBe(
      'Results saved to walnut-results/s-1/ (3 files, 1.2 MB)'
    );
    expect(resultsText({ state: 'saved', path: 'r/', files: [{}], bytes: 10 }, 0)).toBe('Results saved to r/ (1 file, 10 B)');
    expect(resultsText({ state: 'failed', reason: 'over the size cap' }, 0)).toBe('Results not saved: over the size cap');
    expect(resultsText({ state: 'pending', path: 'r/', kept_until: 50 }, 100)).toBe('Fetching results into r/…');
    expect(resultsText({ state: 'refused', reason: 'a link in the archive' }, 0)).toBe(
      'Results not saved: a link in the archive'
    );
    expect(resultsText(null, 0)).toBeNull();
  });

  it('formats sizes and upload progress', () => {
    expect(formatBytes(999)).toBe('999 B');
    expect(formatBytes(1500)).toBe('1.5 KB');
    expect(formatBytes(250_000_000)).toBe('250 MB');
    expect(formatBytes(undefined)).toBe('n/a');
    expect(uploadText('data.csv', 0.4249)).toBe('Uploading data.csv: 42%');
    expect(uploadText('x', 2)).toBe('Uploading x: 100%');
  });
});

describe('web apps of a session', () => {
  it('takes only whole port numbers from 1 to 65535', () => {
    expect(checkPort(' 6006 ')).toBe(6006);
    expect(checkPort('1')).toBe(1);
    expect(checkPort('65535')).toBe(65535);
    for (const bad of ['', '0', '65536', '80.5', '-1', '6006/', 'abc', '1e3', '123456']) {
      expect(checkPort(bad)).toBeNull();
    }
  });

  it('opens an app through the renter server, with no token in the URL', () => {
    const url = appUrl('http://127.0.0.1:8888/lab-base/', 's-abc', 6006);
    expect(url).toBe('http://127.0.0.1:8888/lab-base/walnut/sessions/s-abc/proxy/6006/');
    expect(url).not.toContain('token');
  });
});
