import { CommandRegistry } from '@lumino/commands';
import * as React from 'react';

import { formatSui } from '../logic/money';
import { elapsedSeconds, isActive, isFailedLaunch, settlementAmounts, settlementLabel } from '../logic/sessions';
import { formatDuration } from '../logic/time';
import { resultsText } from '../logic/workspace';
import { WalnutModel } from '../model';
import { IPanelActions } from './actions';
import { ErrorNote, Section } from './section';
import { SessionCard } from './sessionCard';
import { VerificationBadge } from './verificationBadge';

/** Running sessions as cards, then the ended ones with their final cost and settlement. */
export function SessionsSection(props: { model: WalnutModel; actions: IPanelActions; commands: CommandRegistry }) {
  const { model } = props;
  const active = model.sessions.filter(isActive);
  const ended = model.sessions.filter(s => !isActive(s));
  return (
    <Section id="jp-Walnut-sessions" title="Sessions">
      <ErrorNote text={model.sessionsError} />
      {active.length === 0 && <p className="jp-Walnut-muted">No session is running.</p>}
      {active.map(s => (
        <SessionCard key={s.id} session={s} model={model} actions={props.actions} commands={props.commands} />
      ))}
      {ended.length > 0 && (
        <>
          <h4 className="jp-Walnut-subheading">Ended</h4>
          <ul className="jp-Walnut-ended" aria-label="Ended sessions">
            {ended.slice(0, 20).map(s => {
              const amounts = settlementAmounts(s);
              return (
                <li key={s.id} data-session={s.id}>
                  <div className="jp-Walnut-endedHead">
                    <span className="jp-Walnut-strong">{isFailedLaunch(s) ? `Launch on ${s.node}` : s.node}</span>
                    <span className="jp-Walnut-num" data-testid="walnut-final-cost" title="Final cost">
                      {formatSui(s.cost_mist)}
                    </span>
                  </div>
                  <div className="jp-Walnut-muted">
                    {s.status === 'failed' ? 'failed' : 'stopped'}
                    {s.ended_at ? ` ${new Date(s.ended_at * 1000).toLocaleTimeString()}` : ''}
                    {s.started_at ? ` · ran ${formatDuration(elapsedSeconds(s, Date.now() / 1000))}` : ''}
                    {s.reason ? ` · ${s.reason}` : ''}
                  </div>
                  <VerificationBadge session={s} />
                  {resultsText(s.results, Date.now() / 1000) && (
                    <div className="jp-Walnut-results" data-testid="walnut-results">
                      {resultsText(s.results, Date.now() / 1000)}
                    </div>
                  )}
                  <div className="jp-Walnut-muted" data-testid="walnut-settlement">
                    {settlementLabel(s)}
                    {amounts
                      ? `: paid ${formatSui(amounts.claimedMist)}, refunded ${formatSui(amounts.refundedMist)}`
                      : ''}
                  </div>
                </li>
              );
            })}
          </ul>
        </>
      )}
    </Section>
  );
}
