import {
  environmentView,
  failedBeforeCharging,
  ILaunchStep,
  installBillingText,
  launchView
} from '../logic/launch';

const rec = (step: string, state: ILaunchStep['state'], detail = ''): ILaunchStep => ({ step, state, detail, at: 1 });

describe('requirements at launch (issue #15)', () => {
  it('shows the install as a step only for a launch with requirements', () => {
    const early = [rec('quote', 'done'), rec('open_channel', 'started')];
    expect(launchView(early).map(v => v.step)).not.toContain('environment');
    expect(launchView(early, ['environment']).map(v => [v.step, v.state])).toEqual([
      ['quote', 'done'],
      ['open_channel', 'current'],
      ['create_session', 'pending'],
      ['environment', 'pending'],
      ['await_running', 'pending'],
      ['verify', 'pending'],
      ['kernelspec', 'pending']
    ]);
    // a launch without requirements never records it: left out even once later steps ran
    const plain = [rec('create_session', 'done'), rec('await_running', 'done')];
    expect(launchView(plain).map(v => v.step)).toEqual(['create_session', 'await_running', 'verify', 'kernelspec']);
  });

  it('shows the running install with the detail the server recorded', () => {
    const steps = [rec('create_session', 'done'), rec('environment', 'started', 'installing 3 of 7: pandas')];
    const view = launchView(steps, ['environment']).find(v => v.step === 'environment')!;
    expect(view).toMatchObject({ state: 'current', label: 'Installing the requirements', detail: 'installing 3 of 7: pandas' });
  });

  it('reads the provider\u2019s environment report as a line and a fraction', () => {
    expect(environmentView({ state: 'installing', step: 'pandas', done: 3, total: 7 })).toEqual({
      text: 'installing 3 of 7: pandas',
      fraction: 3 / 7,
      error: null,
      finished: false
    });
    expect(environmentView({ state: 'resolving', step: null, done: 0, total: null })).toMatchObject({
      text: 'resolving',
      fraction: null
    });
    expect(environmentView({ state: 'cached', requirements_hash: 'ab' })!.text).toBe('environment ready from cache');
    expect(environmentView({ state: 'ready' })!.finished).toBe(true);
    expect(environmentView({ state: 'none' })).toBeNull();
    expect(environmentView(null)).toBeNull();
    // a provider's counts cannot push the bar past full, nor its text run over many lines
    const odd = environmentView({ state: 'downloading', step: 'a\n\n  b', done: 9, total: 2 })!;
    expect(odd.fraction).toBe(1);
    expect(odd.text).toBe('downloading 2 of 2: a b');
  });

  it('keeps pip\u2019s error text whole and counts a failed install as refunded', () => {
    const pip = 'ERROR: Could not find a version that satisfies the requirement nosuchpkg==1.0\nERROR: No matching distribution found for nosuchpkg==1.0';
    const failed = environmentView({ state: 'failed', error: pip })!;
    expect(failed.error).toBe(pip);
    expect(failed.finished).toBe(true);
    expect(failedBeforeCharging(rec('environment', 'failed', pip))).toBe(true);
  });

  it('says in the quote whether install time is billed', () => {
    expect(installBillingText(true)).toMatch(/is billed/);
    expect(installBillingText(false)).toMatch(/not billed/);
    expect(installBillingText(undefined)).toMatch(/not billed/);
  });
});
