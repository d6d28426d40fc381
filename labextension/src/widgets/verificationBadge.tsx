import * as React from 'react';

import { verificationBadge } from '../logic/analytics';
import { ISession } from '../logic/types';

/** The result of the hardware check at session start, if there was one. */
export function VerificationBadge(props: { session: ISession }) {
  const badge = verificationBadge(props.session);
  if (!badge) {
    return null;
  }
  return (
    <div className={`jp-Walnut-verify jp-mod-${badge.tone}`} title={badge.title} data-testid="walnut-verification">
      {badge.tone === 'bad' ? '✗' : '✓'} {badge.label}
      {badge.tone !== 'good' && <div className="jp-Walnut-muted">{badge.title}</div>}
    </div>
  );
}
