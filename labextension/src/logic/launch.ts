/**
 * A launch's steps as the renter records them (jupyter_walnut/renter/launch.py) and as the
 * sidebar shows them: the step really running, or the one that failed with its message.
 */

export type LaunchStepState = 'started' | 'done' | 'failed';

/** One step of a session's launch, from the session's `launch` list. */
export interface ILaunchStep {
  step: string;
  state: LaunchStepState;
  detail: string;
  at: number;
}

/** The renter's pipeline, in order (renter/launch.py STEPS). */
export const LAUNCH_STEPS: { step: string; label: string }[] = [
  { step: 'quote', label: "Getting the provider's quote" },
  { step: 'open_channel', label: 'Opening the payment channel' },
  { step: 'create_session', label: 'Creating the session' },
  { step: 'await_running', label: 'Starting the container' },
  { step: 'verify', label: 'Verifying the hardware' },
  { step: 'kernelspec', label: 'Registering the kernel' }
];

export type StepViewState = 'pending' | 'current' | 'done' | 'failed';

export interface IStepView {
  step: string;
  label: string;
  state: StepViewState;
  detail: string;
}

export function stepLabel(step: string): string {
  return LAUNCH_STEPS.find(s => s.step === step)?.label ?? step;
}

/**
 * Every step of the pipeline with its recorded state. A step with no record while a later
 * one has one was not part of this launch (no hardware check asked) and is left out.
 */
export function launchView(steps: ILaunchStep[] | undefined): IStepView[] {
  const recorded = new Map((steps ?? []).map(s => [s.step, s]));
  const known = LAUNCH_STEPS.map(s => s.step);
  const lastIndex = Math.max(-1, ...(steps ?? []).map(s => known.indexOf(s.step)));
  const views: IStepView[] = [];
  LAUNCH_STEPS.forEach((s, i) => {
    const rec = recorded.get(s.step);
    if (!rec && i < lastIndex) {
      return;
    }
    const state: StepViewState = !rec
      ? 'pending'
      : rec.state === 'done'
        ? 'done'
        : rec.state === 'failed'
          ? 'failed'
          : 'current';
    views.push({ step: s.step, label: s.label, state, detail: rec?.detail ?? '' });
  });
  for (const rec of steps ?? []) {
    if (!known.includes(rec.step)) {
      // a step this sidebar does not know yet (a newer server): shown by its name
      views.push({
        step: rec.step,
        label: rec.step,
        state: rec.state === 'started' ? 'current' : rec.state,
        detail: rec.detail
      });
    }
  }
  return views;
}

/** The step that failed, if one did. */
export function failedStep(steps: ILaunchStep[] | undefined): ILaunchStep | undefined {
  return (steps ?? []).find(s => s.state === 'failed');
}

/** Whether the money of a launch that failed at this step was all returned. */
export function failedBeforeCharging(step: ILaunchStep | undefined): boolean {
  // up to a container that never ran, the provider meters nothing; the hardware check
  // is paid for (its message says so)
  return !step || ['quote', 'open_channel', 'create_session', 'await_running'].includes(step.step);
}
