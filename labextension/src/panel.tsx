import { ReactWidget, refreshIcon, UseSignal } from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { walnutIcon } from './icons';
import { JobsSection } from './jobs';
import { WalnutModel } from './model';
import { IPanelActions } from './widgets/actions';
import { HistoryView, ProviderView } from './widgets/analytics';
import { LaunchSection } from './widgets/launchForm';
import { ProvidersSection } from './widgets/offers';
import { Section } from './widgets/section';
import { SessionsSection } from './widgets/sessions';
import { WalletSection } from './widgets/wallet';

export type { IPanelActions } from './widgets/actions';

/** The Walnut sidebar: wallet, providers, launch form and sessions. */
export class WalnutPanel extends ReactWidget {
  constructor(
    readonly model: WalnutModel,
    private readonly commands: CommandRegistry,
    private readonly actions: IPanelActions
  ) {
    super();
    this.id = 'jupyter-walnut-panel';
    this.addClass('jp-Walnut');
    this.title.icon = walnutIcon;
    this.title.caption = 'Walnut: rent remote compute';
  }

  /** Bring the launch form into view, with this offer picked. */
  showLaunch(offer?: string): void {
    if (offer) {
      this.model.selectedOffer = offer;
    }
    this.model.notify();
    requestAnimationFrame(() => {
      const el = this.node.querySelector('#jp-Walnut-launch') as HTMLElement | null;
      el?.scrollIntoView({ behavior: 'smooth', block: 'start' });
      (el?.querySelector('select, input') as HTMLElement | null)?.focus();
    });
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.model.setPanelVisible(true);
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.model.setPanelVisible(false);
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this.model.changed}>
        {() => (
          <div className="jp-Walnut-body">
            <header className="jp-Walnut-header">
              <h2 className="jp-Walnut-title">Walnut</h2>
              <button
                className="jp-Walnut-iconButton"
                title="Refresh everything"
                aria-label="Refresh everything"
                onClick={() => this.model.refreshAll()}
              >
                <refreshIcon.react tag="span" />
              </button>
            </header>
            <WalletSection model={this.model} />
            <SessionsSection model={this.model} actions={this.actions} commands={this.commands} />
            <button
              className="jp-Walnut-link jp-Walnut-allOffers"
              onClick={() => void this.commands.execute('walnut:offers')}
              title="Every offer in a sortable grid in the main area"
            >
              Compare all offers…
            </button>
            <ProvidersSection model={this.model} onLaunch={key => this.showLaunch(key)} />
            <LaunchSection model={this.model} actions={this.actions} />
            <JobsSection model={this.model} />
            <Section id="jp-Walnut-history" title="History">
              <HistoryView refreshKey={historyKey(this.model)} />
            </Section>
            <ProviderView
              refreshKey={historyKey(this.model)}
              wrap={body => (
                <Section id="jp-Walnut-provider" title="Provider">
                  {body}
                </Section>
              )}
            />
          </div>
        )}
      </UseSignal>
    );
  }
}

/** Changes when a session starts, ends or settles: the history views fetch again. */
function historyKey(model: WalnutModel): string {
  return model.sessions.map(s => `${s.id}:${s.status}:${s.settlement}`).join();
}
