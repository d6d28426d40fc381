import * as React from 'react';

import { reliabilityLabel } from '../logic/analytics';
import { anyImageLists, IPackageClause } from '../logic/images';
import { formatSui } from '../logic/money';
import {
  describeHardware,
  filterOffers,
  formatMemory,
  offerKey,
  offerPricePerHour,
  parseFilter,
  SortDir,
  SortKey,
  sortOffers
} from '../logic/offers';
import { IOffer } from '../logic/types';
import { WalnutModel } from '../model';
import { ImageChips } from './imageChips';
import { ErrorNote, Section } from './section';
import { SortHeader } from './sortHeader';

const COLUMNS: { key: SortKey; label: string; title: string; num?: boolean }[] = [
  { key: 'node', label: 'Offer', title: 'Provider, region, shape and hardware' },
  { key: 'price', label: 'SUI/h', title: 'Price per hour, and measured latency', num: true },
  { key: 'free', label: 'Free', title: 'Free session slots', num: true },
  {
    key: 'reliability',
    label: 'Rel.',
    title: 'Reliability 0-100 from evidence: sessions, checks at session start, uptime, settlements',
    num: true
  }
];

const SORTS: { key: SortKey; label: string }[] = [
  { key: 'price', label: 'price' },
  { key: 'vram', label: 'VRAM' },
  { key: 'gpu', label: 'GPU count' },
  { key: 'cpus', label: 'CPU' },
  { key: 'memory', label: 'RAM' },
  { key: 'latency', label: 'latency' },
  { key: 'free', label: 'free capacity' },
  { key: 'reliability', label: 'reliability' },
  { key: 'region', label: 'region' },
  { key: 'node', label: 'name' }
];

/** The offers table with its filter and sort controls. */
export function ProvidersSection(props: { model: WalnutModel; onLaunch: (key: string) => void }) {
  const { model } = props;
  const [query, setQuery] = React.useState('');
  const [sort, setSort] = React.useState<{ key: SortKey; dir: SortDir }>({ key: 'price', dir: 'asc' });
  const filter = parseFilter(query);
  const rows = sortOffers(filterOffers(model.offers, query), sort.key, sort.dir);
  const unlisted = model.offers.length ? filter.packages.filter(c => !anyImageLists(model.offers, c.name)) : [];
  const toggle = (key: SortKey) =>
    setSort(s => ({ key, dir: s.key === key && s.dir === 'asc' ? 'desc' : 'asc' }));
  return (
    <Section id="jp-Walnut-providers" title="Providers">
      <input
        className="jp-mod-styled jp-Walnut-filter"
        type="search"
        placeholder='Filter, e.g. "gpu >= 24 GB, under 1 SUI/h, torch>=2"'
        aria-label="Filter offers"
        value={query}
        onChange={e => setQuery(e.target.value)}
      />
      {filter.errors.length > 0 && <div className="jp-Walnut-hint">{filter.errors.join('; ')}</div>}
      {unlisted.length > 0 && (
        <div className="jp-Walnut-hint">No offer's images list {unlisted.map(c => `"${c.name}"`).join(', ')}</div>
      )}
      <div className="jp-Walnut-sortBar">
        <label>
          Sort by{' '}
          <select
            className="jp-mod-styled"
            aria-label="Sort offers by"
            value={sort.key}
            onChange={e => setSort({ key: e.target.value as SortKey, dir: sort.dir })}
          >
            {SORTS.map(o => (
              <option key={o.key} value={o.key}>
                {o.label}
              </option>
            ))}
          </select>
        </label>
        <button
          className="jp-Walnut-link"
          aria-label={sort.dir === 'asc' ? 'Ascending; switch to descending' : 'Descending; switch to ascending'}
          onClick={() => setSort({ key: sort.key, dir: sort.dir === 'asc' ? 'desc' : 'asc' })}
        >
          {sort.dir === 'asc' ? '▲ ascending' : '▼ descending'}
        </button>
      </div>
      <ErrorNote text={model.offersError} />
      {!model.offersLoaded && !model.offersError && <p className="jp-Walnut-muted">Asking the providers…</p>}
      {model.offersLoaded && model.offers.length === 0 && !model.offersError && (
        <p className="jp-Walnut-muted">
          No providers are configured. Start Jupyter with <code>--WalnutApp.providers</code> or set{' '}
          <code>WALNUT_PROVIDERS</code>.
        </p>
      )}
      {model.offers.length > 0 && (
        <table className="jp-Walnut-table jp-Walnut-offers" aria-label="Provider offers">
          <thead>
            <tr>
              {COLUMNS.map(c => (
                <SortHeader key={c.key} label={c.label} title={c.title} num={c.num} sortKey={c.key} sort={sort} onSort={toggle} />
              ))}
            </tr>
          </thead>
          <tbody>
            {rows.map(o => (
              <OfferRow
                key={offerKey(o)}
                offer={o}
                selected={model.selectedOffer === offerKey(o)}
                clauses={filter.packages}
                onLaunch={() => props.onLaunch(offerKey(o))}
              />
            ))}
            {rows.length === 0 && (
              <tr>
                <td colSpan={COLUMNS.length} className="jp-Walnut-muted">
                  No offer matches this filter.
                </td>
              </tr>
            )}
          </tbody>
        </table>
      )}
    </Section>
  );
}

function OfferRow(props: { offer: IOffer; selected: boolean; clauses: IPackageClause[]; onLaunch: () => void }) {
  const o = props.offer;
  if (!o.healthy) {
    return (
      <tr className="jp-Walnut-offer jp-mod-unhealthy">
        <td>
          <span className="jp-Walnut-health jp-mod-down" role="img" aria-label="unreachable" />
          {o.provider_url}
        </td>
        <td colSpan={3} className="jp-Walnut-muted">
          Unreachable: {o.error ?? 'no answer'}
          {o.last_seen ? ` · last seen ${new Date(o.last_seen * 1000).toLocaleString()}` : ''}
        </td>
      </tr>
    );
  }
  const hour = offerPricePerHour(o);
  const rel = reliabilityLabel(o);
  const full = !o.available || (o.free_session_slots ?? 0) <= 0;
  return (
    <tr
      className={`jp-Walnut-offer${props.selected ? ' jp-mod-selected' : ''}`}
      data-offer={offerKey(o)}
      onDoubleClick={props.onLaunch}
    >
      <td>
        <div className="jp-Walnut-strong">
          <span
            className={`jp-Walnut-health ${full ? 'jp-mod-busy' : 'jp-mod-up'}`}
            role="img"
            aria-label={full ? 'healthy, full' : 'healthy'}
            title={full ? 'Healthy, no free capacity' : 'Healthy'}
          />
          {o.node}
          <span className="jp-Walnut-muted jp-Walnut-normal">
            {' '}
            · {o.region} · {o.shape}
          </span>
        </div>
        <div>
          {describeHardware(o)}
          {o.gpus ? ` · ${formatMemory(o.gpu_memory_mb)} VRAM` : ''}
        </div>
        <div className="jp-Walnut-muted">
          {o.cpus} CPU · {formatMemory(o.memory_mb)} RAM
        </div>
        <ImageChips images={o.image_details ?? []} names={o.images} clauses={props.clauses} />
        <button
          className="jp-Walnut-link jp-Walnut-launchLink"
          onClick={props.onLaunch}
          disabled={full}
          aria-label={`Launch on ${o.node} ${o.shape}`}
        >
          Launch…
        </button>
      </td>
      <td className="jp-Walnut-num" title={hour === null ? '' : `${formatSui(hour)} per hour`}>
        <div className="jp-Walnut-strong">{hour === null ? 'n/a' : formatSui(hour, { unit: false, minDecimals: 2 })}</div>
        <div className="jp-Walnut-muted" title="Measured latency">
          {o.latency_ms === undefined ? 'n/a' : `${Math.round(o.latency_ms)} ms`}
        </div>
      </td>
      <td className="jp-Walnut-num">{o.free_session_slots ?? 'n/a'}</td>
      <td className="jp-Walnut-num" title={rel.title} data-testid="walnut-reliability">
        <span className={`jp-Walnut-score jp-mod-${rel.tone}`}>{rel.text}</span>
        {o.verified === false && <div className="jp-Walnut-score jp-mod-bad">check failed</div>}
      </td>
    </tr>
  );
}
