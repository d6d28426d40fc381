import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import * as React from 'react';

import { walnutIcon } from './icons';
import { formatSui } from './logic/money';
import { WalnutModel } from './model';
import { isActive } from './logic/sessions';
import { currentWarning } from './logic/workspace';

/** "Walnut 0.0123 SUI" in the status bar: running cost of active sessions. */
export class WalnutStatus extends ReactWidget {
  constructor(
    private readonly model: WalnutModel,
    private readonly onOpen: () => void
  ) {
    super();
    this.addClass('jp-Walnut-status');
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this.model.changed}>
        {() => {
          const t = this.model.totals;
          const warned = this.model.sessions.filter(isActive).map(currentWarning).find(w => w !== null) ?? null;
          const base =
            t.active === 0
              ? 'Walnut: no session running'
              : `Walnut: ${t.active} session${t.active > 1 ? 's' : ''}, ${formatSui(t.costMist)} of ${formatSui(
                  t.budgetMist
                )} budget used${t.level !== 'ok' ? ' (budget nearly used)' : ''}`;
          const label = warned ? `${base}. ${warned.message}` : base;
          return (
            <button
              className={`jp-Walnut-statusButton jp-mod-${warned && t.level === 'ok' ? 'low' : t.level}`}
              title={`${label}. Click to open the Walnut panel.`}
              aria-label={label}
              onClick={this.onOpen}
            >
              <walnutIcon.react tag="span" className="jp-Walnut-statusIcon" />
              <span data-testid="walnut-status-cost">
                {t.active === 0 ? 'Walnut' : formatSui(t.costMist)}
              </span>
              {t.active > 0 && <span className="jp-Walnut-statusCount">×{t.active}</span>}
              {warned && (
                <span className="jp-Walnut-statusWarning" data-testid="walnut-status-warning">
                  ⚠ {warned.message}
                </span>
              )}
            </button>
          );
        }}
      </UseSignal>
    );
  }
}
