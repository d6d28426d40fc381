import * as React from 'react';

import { IPackageClause, imageLabel, imageMeets, imageTitle } from '../logic/images';
import { IImageInfo } from '../logic/types';

const MAX_CHIPS = 12;

/**
 * An offer's images as compact chips ("scipy · py3.11 · torch 2.13 (CPU)"), those that meet
 * the filter's package clauses marked. Provider-written text, rendered as text only.
 */
export function ImageChips(props: { images: IImageInfo[]; names?: string[]; clauses?: IPackageClause[] }) {
  const clauses = props.clauses ?? [];
  const images: IImageInfo[] = props.images.length
    ? props.images
    : (props.names ?? []).map(name => ({ name: String(name) }));
  if (!images.length) {
    return null;
  }
  const shown = images.slice(0, MAX_CHIPS);
  return (
    <div className="jp-Walnut-chips" aria-label="Images">
      {shown.map((image, i) => {
        const match = clauses.length > 0 && clauses.every(c => imageMeets(image, c));
        return (
          <span
            key={`${i}-${String(image.name)}`}
            className={`jp-Walnut-chip${match ? ' jp-mod-match' : ''}`}
            title={imageTitle(image)}
            data-testid="walnut-image-chip"
          >
            {imageLabel(image)}
          </span>
        );
      })}
      {images.length > shown.length && <span className="jp-Walnut-muted">+{images.length - shown.length}</span>}
    </div>
  );
}
