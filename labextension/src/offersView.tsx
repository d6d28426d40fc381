import { ReactWidget } from '@jupyterlab/apputils';
import { UseSignal } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { walnutIcon } from './icons';
import { KernelPicker } from './kernelPicker';
import { reliabilityLabel } from './logic/analytics';
import { formatSui } from './logic/money';
import {
  describeHardware,
  filterOffers,
  formatMemory,
  gflopsPerMist,
  offerKey,
  offerPricePerHour,
  parseFilter,
  SortDir,
  SortKey,
  sortOffers
} from './logic/offers';
import { IOffer } from './logic/types';
import { WalnutModel } from './model';
import { ImageChips } from './widgets/imageChips';
import { SortHeader } from './widgets/sortHeader';

/** The columns of the offers view; a `key` makes the column sortable. */
const COLUMNS: { label: string; title: string; key?: SortKey; num?: boolean }[] = [
  { key: 'node', label: 'Provider', title: 'Provider node and region' },
  { label: 'Shape', title: 'The shape offered' },
  { key: 'gpu', label: 'GPUs', title: 'GPU model and count', num: true },
  { key: 'vram', label: 'VRAM', title: 'Memory of each GPU', num: true },
  { key: 'cpus', label: 'CPUs', title: 'CPU cores', num: true },
  { key: 'memory', label: 'RAM', title: 'Memory', num: true },
  { label: 'Images', title: 'Images with their key package versions' },
  { key: 'latency', label: 'Latency', title: 'Latency measured from this server', num: true },
  { key: 'price', label: 'SUI/h', title: 'Price per hour', num: true },
  { key: 'reliability', label: 'Reliability', title: 'Reliability 0-100 from your own evidence', num: true },
  {
    key: 'perf',
    label: 'GFLOP/s',
    title: 'Median GFLOP/s your own verification probe measured in sessions on this offer',
    num: true
  },
  {
    key: 'value',
    label: 'GFLOP/MIST',
    title: 'Verified GFLOP/s per MIST/s of price: how much measured compute one MIST buys',
    num: true
  },
  { key: 'free', label: 'Free', title: 'Free session slots', num: true }
];

/** Every offer in a sortable, filterable grid in the main area (issue #21). */
export function OffersGrid(props: {
  model: WalnutModel;
  onLaunch: (key: string) => void;
  /** The filter box's text at first (the view sets it anew by remounting the grid). */
  initialQuery?: string;
  /** "Choosing a kernel for …": the notebook that takes the launched session's kernel. */
  note?: React.ReactNode;
}) {
  const { model } = props;
  const [query, setQuery] = React.useState(props.initialQuery ?? '');
  const [sort, setSort] = React.useState<{ key: SortKey; dir: SortDir }>({ key: 'price', dir: 'asc' });
  const filter = parseFilter(query);
  const rows = sortOffers(filterOffers(model.offers, query), sort.key, sort.dir);
  const toggle = (key: SortKey) =>
    setSort(s => ({
      key,
      // figures where more is better start from the best
      dir: s.key === key ? (s.dir === 'asc' ? 'desc' : 'asc') : ['perf', 'value', 'reliability', 'free'].includes(key) ? 'desc' : 'asc'
    }));
  return (
    <div className="jp-Walnut-offersView">
      <div className="jp-Walnut-offersHead">
        <input
          className="jp-mod-styled jp-Walnut-filter"
          type="search"
          placeholder='Filter, e.g. "gpu >= 24 GB, under 1 SUI/h, torch>=2"'
          aria-label="Filter all offers"
          value={query}
          onChange={e => setQuery(e.target.value)}
        />
        <span className="jp-Walnut-muted" role="status" data-testid="walnut-offers-count">
          {rows.length} of {model.offers.length} offers
        </span>
      </div>
      {props.note}
      {filter.errors.length > 0 && <div className="jp-Walnut-hint">{filter.errors.join('; ')}</div>}
      <table className="jp-Walnut-table jp-Walnut-offersGrid" aria-label="All offers">
        <thead>
          <tr>
            {COLUMNS.map(c => (
              <SortHeader key={c.label} label={c.label} title={c.title} num={c.num} sortKey={c.key} sort={sort} onSort={toggle} />
            ))}
            <th scope="col">
              <span className="jp-Walnut-srOnly">Launch</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {rows.map(o => (
            <GridRow key={offerKey(o)} offer={o} onLaunch={() => props.onLaunch(offerKey(o))} />
          ))}
          {rows.length === 0 && (
            <tr>
              <td colSpan={COLUMNS.length + 1} className="jp-Walnut-muted">
                {model.offers.length ? 'No offer matches this filter.' : 'No offers yet.'}
              </td>
            </tr>
          )}
        </tbody>
      </table>
      <p className="jp-Walnut-muted">
        GFLOP/s is what your own verification probe measured at session start (a claim of the provider never
        counts); offers you have not verified show “not measured”.
      </p>
    </div>
  );
}

function GridRow(props: { offer: IOffer; onLaunch: () => void }) {
  const o = props.offer;
  if (!o.healthy) {
    return (
      <tr className="jp-Walnut-gridRow jp-mod-unhealthy" data-offer={offerKey(o)}>
        <td>{o.node ?? o.provider_url}</td>
        <td colSpan={COLUMNS.length} className="jp-Walnut-muted">
          Unreachable: {o.error ?? 'no answer'}
        </td>
      </tr>
    );
  }
  const hour = offerPricePerHour(o);
  const rel = reliabilityLabel(o);
  const value = gflopsPerMist(o);
  const full = !o.available || (o.free_session_slots ?? 0) <= 0;
  return (
    <tr className="jp-Walnut-gridRow" data-offer={offerKey(o)}>
      <td>
        <span className="jp-Walnut-strong">{o.node}</span>
        <div className="jp-Walnut-muted">{o.region}</div>
      </td>
      <td>{o.shape}</td>
      <td className="jp-Walnut-num">{o.gpus ? describeHardware(o) : 'CPU only'}</td>
      <td className="jp-Walnut-num">{o.gpus ? formatMemory(o.gpu_memory_mb) : '–'}</td>
      <td className="jp-Walnut-num">{o.cpus}</td>
      <td className="jp-Walnut-num">{formatMemory(o.memory_mb)}</td>
      <td className="jp-Walnut-wrap">
        <ImageChips images={o.image_details ?? []} names={o.images} clauses={[]} />
      </td>
      <td className="jp-Walnut-num">{o.latency_ms === undefined ? 'n/a' : `${Math.round(o.latency_ms)} ms`}</td>
      <td className="jp-Walnut-num" title={hour === null ? '' : `${formatSui(hour)} per hour`}>
        {hour === null ? 'n/a' : formatSui(hour, { unit: false, minDecimals: 2 })}
      </td>
      <td className="jp-Walnut-num" title={rel.title}>
        <span className={`jp-Walnut-score jp-mod-${rel.tone}`}>{rel.text}</span>
      </td>
      <td className="jp-Walnut-num" data-testid="walnut-gflops">
        {typeof o.verified_gflops === 'number' ? (
          <span title={`${o.verified_checks ?? 0} passed check(s)`}>{o.verified_gflops.toLocaleString()}</span>
        ) : (
          <span className="jp-Walnut-muted">not measured</span>
        )}
      </td>
      <td className="jp-Walnut-num" data-testid="walnut-value">
        {value === null ? '–' : value.toPrecision(3)}
      </td>
      <td className="jp-Walnut-num">{o.free_session_slots ?? 'n/a'}</td>
      <td>
        <button
          className="jp-Button jp-mod-styled jp-mod-accept"
          disabled={full}
          onClick={props.onLaunch}
          aria-label={`Launch on ${o.node} ${o.shape}`}
        >
          Launch…
        </button>
      </td>
    </tr>
  );
}

/** The notebook the view chooses a kernel for ("New Walnut kernel…"), and why it is filtered. */
function PickerNote(props: { picker: KernelPicker }) {
  const target = props.picker.target;
  if (!target) {
    return null;
  }
  return (
    <div className="jp-Walnut-pickerNote" role="note" data-testid="walnut-picker-note">
      Choosing a kernel for <span className="jp-Walnut-strong">{target.path}</span>
      {target.needs.because.length > 0 ? `, filtered by what it imports (${target.needs.because.join(', ')})` : ''}.{' '}
      {target.offer
        ? 'It switches to the new kernel once the session runs.'
        : 'Launch from a row: once the session runs, the notebook switches to its kernel.'}{' '}
      <button className="jp-Walnut-link" onClick={() => props.picker.cancel()}>
        Cancel
      </button>
    </div>
  );
}

/** The grid as a main-area widget, re-rendered whenever the model changes. */
export class OffersView extends ReactWidget {
  constructor(
    private readonly model: WalnutModel,
    private readonly onLaunch: (key: string) => void,
    private readonly picker?: KernelPicker
  ) {
    super();
    this.id = 'jp-Walnut-offers-view';
    this.addClass('jp-Walnut-offersPanel');
    this.title.label = 'Walnut offers';
    this.title.caption = 'Every offer of the configured providers';
    this.title.icon = walnutIcon;
    this.title.closable = true;
    picker?.changed.connect(() => this.update(), this);
  }

  /** Put this filter in the box (what a notebook needs, for "New Walnut kernel…"). */
  setQuery(query: string): void {
    this._query = query;
    this._queryStamp++;
    this.update();
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (this.isVisible) {
      this.model.setPanelVisible(true, 'offers-view');
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.model.setPanelVisible(true, 'offers-view');
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.model.setPanelVisible(false, 'offers-view');
  }

  protected onBeforeDetach(msg: Message): void {
    this.model.setPanelVisible(false, 'offers-view');
    super.onBeforeDetach(msg);
  }

  render(): JSX.Element {
    const onLaunch = (key: string) => {
      this.picker?.launchingFrom(key);
      this.onLaunch(key);
    };
    return (
      <UseSignal signal={this.model.changed}>
        {() => (
          <OffersGrid
            key={this._queryStamp}
            model={this.model}
            onLaunch={onLaunch}
            initialQuery={this._query}
            note={this.picker && <PickerNote picker={this.picker} />}
          />
        )}
      </UseSignal>
    );
  }

  private _query = '';
  private _queryStamp = 0;
}
