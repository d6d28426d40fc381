/** Errors in words a user understands: never a stack trace. */

export class WalnutError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

const TRACE = /Traceback \(most recent call last\)|^\s+at .+\(.+:\d+:\d+\)|File ".+", line \d+/m;

function firstSentence(message: string): string {
  const lines = message
    .split('\n')
    .map(l => l.trim())
    .filter(Boolean);
  // a Python traceback ends with "SomeError: what happened"
  if (TRACE.test(message)) {
    const last = lines[lines.length - 1] ?? '';
    const m = /^[\w.]+(?:Error|Exception):\s*(.+)$/.exec(last);
    return m ? m[1] : '';
  }
  let text = lines[0] ?? '';
  if (text.length > 300) {
    text = text.slice(0, 297) + '…';
  }
  return text;
}

function capitalise(text: string): string {
  return text ? text[0].toUpperCase() + text.slice(1) : text;
}

/** A message for people from an HTTP status and the server's message (if any). */
export function describeError(status: number, message?: string | null): string {
  const detail = firstSentence(message ?? '');
  if (status === 0) {
    return 'Cannot reach the Jupyter server. Check that it is still running.';
  }
  if (status === 401 || status === 403) {
    return 'Your Jupyter session has expired. Reload the page and log in again.';
  }
  if (status === 404 && !detail) {
    return 'Walnut is not enabled on this Jupyter server (the jupyter_walnut server extension is missing).';
  }
  if (status === 502 || status === 503 || status === 504) {
    return detail
      ? `The provider did not answer as expected: ${detail}.`.replace(/\.\.$/, '.')
      : 'The provider could not be reached. Try again, or pick another offer.';
  }
  if (status >= 500) {
    return 'Something went wrong inside Walnut on the Jupyter server; the server log has the details.';
  }
  if (detail) {
    const text = capitalise(detail);
    return /[.!?]$/.test(text) ? text : text + '.';
  }
  return `The request failed (HTTP ${status}).`;
}

/** Any thrown value as words. */
export function errorText(error: unknown): string {
  if (error instanceof WalnutError) {
    return describeError(error.status, error.message);
  }
  if (error && typeof error === 'object' && 'message' in error) {
    const msg = firstSentence(String((error as any).message));
    if (/NetworkError|Failed to fetch|Load failed/i.test(msg)) {
      return describeError(0);
    }
    return msg ? capitalise(msg) : 'Something went wrong.';
  }
  return 'Something went wrong.';
}
