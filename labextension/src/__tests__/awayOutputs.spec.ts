import { isWalnutKernel, nextWait, onlyOutputsDiffer, samePath, WrittenTracker } from '../logic/awayOutputs';
import { testSession } from './sessionFixture';

describe('WrittenTracker', () => {
  const at = (path: string, when: number) => testSession({ outputs_written: [{ path, at: when }] });

  it('takes note on the first poll and reports only later writes', () => {
    const tracker = new WrittenTracker();
    expect(tracker.fresh([at('old.ipynb', 10)])).toEqual([]);
    expect(tracker.fresh([at('old.ipynb', 10)])).toEqual([]);
    expect(tracker.fresh([at('old.ipynb', 12)])).toEqual([{ path: 'old.ipynb', at: 12 }]);
    expect(tracker.fresh([at('old.ipynb', 12), at('train.ipynb', 13)])).toEqual([
      { path: 'train.ipynb', at: 13 }
    ]);
  });

  it('reports a write once however often it is polled', () => {
    const tracker = new WrittenTracker();
    tracker.fresh([]);
    expect(tracker.fresh([at('a.ipynb', 5)])).toHaveLength(1);
    expect(tracker.fresh([at('a.ipynb', 5)])).toHaveLength(0);
  });

  it('ignores entries that are not a path and a time', () => {
    const tracker = new WrittenTracker();
    tracker.fresh([]);
    const bad = testSession({ outputs_written: [{ path: 3, at: 'x' } as never, null as never] });
    expect(tracker.fresh([bad])).toEqual([]);
  });
});

describe('samePath', () => {
  it('treats a leading slash as the same notebook', () => {
    expect(samePath('/dir/train.ipynb', 'dir/train.ipynb')).toBe(true);
    expect(samePath('dir/train.ipynb', 'train.ipynb')).toBe(false);
  });
});

describe('onlyOutputsDiffer', () => {
  const nb = (...sources: string[]) => ({ cells: sources.map((source, i) => ({ cell_type: 'code', id: `c${i}`, source })) });

  it('is true when only outputs and counts changed', () => {
    const live = { cells: [{ ...nb('print(1)').cells[0], outputs: [{ text: 'a' }], execution_count: 1 }] };
    expect(onlyOutputsDiffer(live, nb('print(1)'))).toBe(true);
    expect(onlyOutputsDiffer({ cells: [{ cell_type: 'code', id: 'c0', source: ['pri', 'nt(1)'] }] }, nb('print(1)'))).toBe(true);
  });

  it('ignores blank cells, such as the one Shift+Enter adds', () => {
    expect(onlyOutputsDiffer(nb('print(1)', ''), nb('print(1)'))).toBe(true);
    expect(onlyOutputsDiffer(nb('print(1)', '  \n'), nb('print(1)'))).toBe(true);
  });

  it('is false when the user edited, added or removed a cell', () => {
    expect(onlyOutputsDiffer(nb('print(2)'), nb('print(1)'))).toBe(false);
    expect(onlyOutputsDiffer(nb('print(1)', 'x'), nb('print(1)'))).toBe(false);
    expect(onlyOutputsDiffer(nb(), nb('print(1)'))).toBe(false);
  });
});

describe('reattaching', () => {
  it('follows only session kernels and backs off to 10 s', () => {
    expect(isWalnutKernel('walnut-s-0123456789abcdef')).toBe(true);
    expect(isWalnutKernel('python3')).toBe(false);
    expect(isWalnutKernel(undefined)).toBe(false);
    expect([0, 1000, 2000, 8000, 10_000].map(nextWait)).toEqual([1000, 2000, 4000, 10_000, 10_000]);
  });
});
