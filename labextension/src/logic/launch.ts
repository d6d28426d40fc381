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

/** The renter's pipeline, in order (renter/launch.py STEPS); an `optional` step is shown
 * only once the server recorded it (a launch with requirements installs them, one with a
 * folder sends it). */
export const LAUNCH_STEPS: { step: string; label: string; optional?: boolean }[] = [
  { step: 'quote', label: "Getting the provider's quote" },
  { step: 'open_channel', label: 'Opening the payment channel' },
  { step: 'create_session', label: 'Creating the session' },
  { step: 'environment', label: 'Installing the requirements', optional: true },
  { step: 'await_running', label: 'Starting the container' },
  { step: 'verify', label: 'Verifying the hardware' },
  { step: 'workspace', label: 'Sending the folder', optional: true },
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
 * one has one was not part of this launch (no hardware check asked) and is left out; an
 * optional one is shown before it runs only when `expected` names it.
 */
export function launchView(steps: ILaunchStep[] | undefined, expected: string[] = []): IStepView[] {
  const recorded = new Map((steps ?? []).map(s => [s.step, s]));
  const known = LAUNCH_STEPS.map(s => s.step);
  const lastIndex = Math.max(-1, ...(steps ?? []).map(s => known.indexOf(s.step)));
  const views: IStepView[] = [];
  LAUNCH_STEPS.forEach((s, i) => {
    const rec = recorded.get(s.step);
    if (!rec && (i < lastIndex || (s.optional && !expected.includes(s.step)))) {
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
  // is paid for (its message says so); a failed install is refunded in full (issue #15)
  return !step || ['quote', 'open_channel', 'create_session', 'environment', 'await_running'].includes(step.step);
}

/** The most requirements text a launch may carry (renter/requirements.py). */
export const MAX_REQUIREMENTS_BYTES = 64 * 1024;

/** What the provider reports while it prepares a session's requirements (contract C4). */
export interface IEnvironment {
  state: 'none' | 'resolving' | 'downloading' | 'installing' | 'ready' | 'cached' | 'failed';
  step?: string | null;
  done?: number | null;
  total?: number | null;
  requirements_hash?: string | null;
  error?: string | null;
}

export interface IEnvironmentView {
  /** One line: "installing 3 of 7: pandas", "environment ready from cache". */
  text: string;
  /** 0..1 while a count is known, else null (an indeterminate bar). */
  fraction: number | null;
  /** pip's own error text, when the install failed. */
  error: string | null;
  finished: boolean;
}

/** The provider's environment report in words, as renter/launch.py environment_detail. */
export function environmentView(env: IEnvironment | null | undefined): IEnvironmentView | null {
  if (!env || typeof env !== 'object' || !env.state || env.state === 'none') {
    return null;
  }
  const step = String(env.step ?? '').replace(/\s+/g, ' ').trim().slice(0, 200);
  if (env.state === 'cached') {
    return { text: 'environment ready from cache', fraction: 1, error: null, finished: true };
  }
  if (env.state === 'ready') {
    return { text: 'environment ready', fraction: 1, error: null, finished: true };
  }
  if (env.state === 'failed') {
    const error = String(env.error || step || 'no error text from the provider');
    return { text: 'installing requirements failed', fraction: null, error, finished: true };
  }
  const counted = Number.isInteger(env.done) && Number.isInteger(env.total) && (env.total as number) > 0;
  const done = counted ? Math.min(env.done as number, env.total as number) : 0;
  const text = `${env.state}${counted ? ` ${done} of ${env.total}` : ''}${step ? `: ${step}` : ''}`;
  return { text, fraction: counted ? done / (env.total as number) : null, error: null, finished: false };
}

/** The quote's line about install time (the offer's settlement.bills_install). */
export function installBillingText(billsInstall: boolean | undefined): string {
  return billsInstall
    ? 'Installing the requirements is billed at the offer’s price.'
    : 'Installing the requirements is not billed: metering starts once they are installed.';
}
