import * as React from 'react';
// @ts-expect-error react-dom has no type declarations installed here; the server renderer is enough
import { renderToStaticMarkup } from 'react-dom/server';

import { anyImageLists, imageLabel, imageTitle, releaseOf } from '../logic/images';
import { filterOffers, parseFilter } from '../logic/offers';
import { IImageInfo, IOffer } from '../logic/types';
import { ImageChips } from '../widgets/imageChips';

const SCIPY = { python: '3.11.2', numpy: '2.2.6', pandas: '2.2.3', torch: null, cuda: null };
const scipy: IImageInfo = { name: 'scipy', flavor: 'scipy', description: 'research', packages: SCIPY };
const torchCpu: IImageInfo = { name: 'pytorch', packages: { ...SCIPY, torch: '2.13.0+cpu' } };
const torchCuda: IImageInfo = {
  name: 'pytorch-cuda',
  packages: { ...SCIPY, python: '3.12.1', torch: '2.13.0+cu124', cuda: '12.4' }
};
const legacy: IImageInfo = { name: 'python', packages: null };

const base = { healthy: true, runtime: 'docker', max_session_seconds: 86400, available: true, cpus: 4 };
const offers: IOffer[] = [
  { ...base, provider_url: 'http://a', node: 'alpha', shape: 'cpu', images: ['scipy'], image_details: [scipy] },
  {
    ...base,
    provider_url: 'http://b',
    node: 'bravo',
    shape: 'gpu',
    images: ['pytorch', 'pytorch-cuda'],
    image_details: [torchCpu, torchCuda]
  },
  { ...base, provider_url: 'http://c', node: 'charlie', shape: 'old', images: ['python'] },
  { provider_url: 'http://dead', healthy: false, error: 'refused' }
];
const names = (list: IOffer[]) => list.map(o => o.node ?? o.provider_url);

describe('image chips', () => {
  it('label each image with python, torch and its build', () => {
    expect(imageLabel(scipy)).toBe('scipy · py3.11');
    expect(imageLabel(torchCpu)).toBe('pytorch · py3.11 · torch 2.13 (CPU)');
    expect(imageLabel(torchCuda)).toBe('pytorch-cuda · py3.12 · torch 2.13 (CUDA 12.4)');
    expect(imageLabel(legacy)).toBe('python');
    expect(imageTitle(legacy)).toBe('package versions not listed by this provider');
    expect(imageTitle(scipy).split('\n')).toContain('pandas 2.2.3');
  });

  it('render as text only, bounded, matching chips marked', () => {
    const hostile: IImageInfo = {
      name: '<img src=x onerror=alert(1)>' + 'x'.repeat(5000),
      packages: { python: '<script>', torch: '2.1"><b>bold</b>' }
    };
    const html = renderToStaticMarkup(
      React.createElement(ImageChips, {
        images: [torchCpu, torchCuda, hostile],
        clauses: parseFilter('cuda').packages
      })
    );
    expect(html).toContain('>pytorch · py3.11 · torch 2.13 (CPU)</span>');
    expect(html).toContain('jp-Walnut-chip jp-mod-match" title');
    expect(html.match(/jp-mod-match/g)?.length).toBe(1); // only the CUDA image
    expect(html).not.toContain('<img');
    expect(html).not.toContain('<b>');
    expect(html).toContain('&lt;img src=x onerror=alert(1)&gt;');
    expect(html.length).toBeLessThan(3000); // the 5000-character name is cut
  });

  it('fall back to the image names of an older offer', () => {
    const html = renderToStaticMarkup(React.createElement(ImageChips, { images: [], names: ['python'] }));
    expect(html).toContain('>python</span>');
    expect(renderToStaticMarkup(React.createElement(ImageChips, { images: [] }))).toBe('');
  });
});

describe('package filter', () => {
  it('narrows the offers by the versions of their images', () => {
    expect(names(filterOffers(offers, 'torch>=2'))).toEqual(['bravo']);
    expect(names(filterOffers(offers, 'torch>=3'))).toEqual([]);
    expect(names(filterOffers(offers, 'py>=3.12'))).toEqual(['bravo']);
    expect(names(filterOffers(offers, 'python=3.11'))).toEqual(['alpha', 'bravo']);
    expect(names(filterOffers(offers, 'pandas==2.2.3 cpu>=4'))).toEqual(['alpha', 'bravo']);
    expect(names(filterOffers(offers, 'cuda'))).toEqual(['bravo']);
    expect(names(filterOffers(offers, 'cuda>=13'))).toEqual([]);
    expect(names(filterOffers(offers, 'scipy'))).toEqual(['alpha']); // a word: the image name
    expect(names(filterOffers(offers, 'python'))).toEqual(['charlie']);
  });

  it('parses package clauses and says what no image lists', () => {
    const f = parseFilter('torch >= 2.1, scikit-learn>1');
    expect(f.errors).toEqual([]);
    expect(f.packages).toEqual([
      { name: 'torch', op: '>=', version: [2, 1] },
      { name: 'scikit-learn', op: '>', version: [1] }
    ]);
    expect(anyImageLists(offers, 'torch')).toBe(true);
    expect(anyImageLists(offers, 'scikit-learn')).toBe(false);
    expect(releaseOf('2.13.0+cpu')).toEqual([2, 13, 0]);
    expect(releaseOf('<script>')).toBeNull();
  });
});
