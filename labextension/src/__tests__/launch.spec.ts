import { failedBeforeCharging, failedStep, ILaunchStep, launchView, stepLabel } from '../logic/launch';

const rec = (step: string, state: ILaunchStep['state'], detail = ''): ILaunchStep => ({ step, state, detail, at: 1 });

describe('launch steps', () => {
  it('shows the step the server reports as running, the earlier ones done', () => {
    const views = launchView([rec('quote', 'done'), rec('open_channel', 'done'), rec('create_session', 'done'), rec('await_running', 'started')]);
    expect(views.map(v => [v.step, v.state])).toEqual([
      ['quote', 'done'],
      ['open_channel', 'done'],
      ['create_session', 'done'],
      ['await_running', 'current'],
      ['verify', 'pending'],
      ['kernelspec', 'pending']
    ]);
    expect(views[3].label).toBe('Starting the container');
  });

  it('shows nothing as running before the server recorded a step', () => {
    expect(launchView([]).every(v => v.state === 'pending')).toBe(true);
    expect(launchView(undefined)).toHaveLength(6);
  });

  it('names the failed step with its message, and no later step ran', () => {
    const steps = [rec('quote', 'done'), rec('open_channel', 'done'), rec('create_session', 'done'), rec('await_running', 'done'),
      rec('verify', 'failed', 'verification failed: the offer promises 4 CPUs, the container has 2')];
    const views = launchView(steps);
    expect(views.find(v => v.step === 'verify')).toMatchObject({ state: 'failed', detail: expect.stringContaining('promises 4 CPUs') });
    expect(views.find(v => v.step === 'kernelspec')!.state).toBe('pending');
    expect(stepLabel(failedStep(steps)!.step)).toBe('Verifying the hardware');
    expect(failedBeforeCharging(failedStep(steps))).toBe(false); // the check is paid for
    expect(failedBeforeCharging(rec('open_channel', 'failed'))).toBe(true);
  });

  it('leaves out a step this launch skipped, and shows an unknown one by name', () => {
    const views = launchView([rec('await_running', 'done'), rec('kernelspec', 'done'), rec('warm_cache', 'started')]);
    expect(views.map(v => v.step)).toEqual(['await_running', 'kernelspec', 'warm_cache']);
    expect(views[2]).toMatchObject({ label: 'warm_cache', state: 'current' });
  });
});
