/** How often each part of the panel refreshes: cheap when nothing runs. */

export interface IPollPlan {
  /** Sessions list (also feeds the status bar): fast only while a session is active. */
  sessionsMs: number;
  /** Provider offers: each refresh probes every provider, so slow, and only while visible. */
  offersMs: number;
  /** Wallet balance. */
  walletMs: number;
}

export function pollPlan(activeSessions: number, launching: boolean, settling = 0): IPollPlan {
  const busy = activeSessions > 0 || launching;
  return {
    sessionsMs: launching ? 1000 : busy ? 2000 : settling > 0 ? 3000 : 15000,
    offersMs: 30000,
    walletMs: busy ? 5000 : 30000
  };
}

/** The cap for the exponential backoff of a failing poll. */
export const MAX_BACKOFF_MS = 60000;
