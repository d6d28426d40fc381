import * as React from 'react';

import { SortDir, SortKey } from '../logic/offers';

/** One column header of an offers table: a button that sorts by `sortKey` (with its mark
 * and aria-sort), or plain text for a column that does not sort. */
export function SortHeader(props: {
  label: string;
  title: string;
  num?: boolean;
  sortKey?: SortKey;
  sort: { key: SortKey; dir: SortDir };
  onSort: (key: SortKey) => void;
}) {
  const { sortKey, sort } = props;
  const current = sortKey !== undefined && sort.key === sortKey;
  return (
    <th
      scope="col"
      title={props.title}
      className={props.num ? 'jp-Walnut-num' : undefined}
      aria-sort={sortKey === undefined ? undefined : current ? (sort.dir === 'asc' ? 'ascending' : 'descending') : 'none'}
    >
      {sortKey === undefined ? (
        props.label
      ) : (
        <button className="jp-Walnut-sort" onClick={() => props.onSort(sortKey)}>
          {props.label}
          <span className="jp-Walnut-sortMark" aria-hidden="true">
            {current ? (sort.dir === 'asc' ? '▲' : '▼') : ''}
          </span>
        </button>
      )}
    </th>
  );
}
