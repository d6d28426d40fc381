import { Notification } from '@jupyterlab/apputils';
import * as React from 'react';

import { errorText } from '../logic/errors';
import { formatSui } from '../logic/money';
import { WalnutModel } from '../model';
import { ErrorNote, Section } from './section';

const DEMO_FUND_MIST = 10n * 1_000_000_000n;

/** Balance, network and address; a fund button on the local ledger. */
export function WalletSection(props: { model: WalnutModel }) {
  const { model } = props;
  const w = model.wallet;
  const [copied, setCopied] = React.useState(false);
  const local = w?.network === 'local';
  const fund = async () => {
    try {
      await model.fundWallet(DEMO_FUND_MIST);
      Notification.success(`Added ${formatSui(DEMO_FUND_MIST, { minDecimals: 0 })} to the demo account.`, {
        autoClose: 4000
      });
    } catch (e) {
      Notification.error(`Could not fund the demo account: ${errorText(e)}`, { autoClose: 8000 });
    }
  };
  return (
    <Section id="jp-Walnut-wallet" title="Wallet">
      <ErrorNote text={model.walletError} />
      {w ? (
        <dl className="jp-Walnut-wallet">
          <dt>Balance</dt>
          <dd className="jp-Walnut-balance" data-testid="walnut-balance">
            {w.balance_mist === undefined || w.balance_mist === null ? 'n/a' : formatSui(w.balance_mist)}
          </dd>
          <dt>Network</dt>
          <dd>
            <span className={`jp-Walnut-badge ${local ? 'jp-mod-local' : 'jp-mod-network'}`}>
              {w.network ? (local ? 'local ledger' : `Sui ${w.network}`) : 'n/a'}
            </span>
          </dd>
          <dt>Address</dt>
          <dd className="jp-Walnut-address">
            <code title={w.address}>{shortAddress(w.address)}</code>
            <button
              className="jp-Walnut-link"
              onClick={() => {
                void navigator.clipboard?.writeText(w.address);
                setCopied(true);
                setTimeout(() => setCopied(false), 1500);
              }}
            >
              {copied ? 'copied' : 'copy'}
            </button>
          </dd>
        </dl>
      ) : (
        !model.walletError && <p className="jp-Walnut-muted">Loading the wallet…</p>
      )}
      {local && (
        <button
          className="jp-Button jp-mod-styled jp-Walnut-secondary"
          disabled={model.busy.has('wallet')}
          onClick={() => void fund()}
        >
          {model.busy.has('wallet') ? 'Funding…' : `Fund demo account (+${formatSui(DEMO_FUND_MIST, { minDecimals: 0 })})`}
        </button>
      )}
    </Section>
  );
}

function shortAddress(a: string): string {
  return a.length > 16 ? `${a.slice(0, 8)}…${a.slice(-6)}` : a;
}
