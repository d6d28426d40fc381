import { isLaunchOf, isPickerKernel, needsQuery, notebookImports, PICKER_KERNEL, sourceImports } from '../logic/needs';
import { filterOffers, parseFilter } from '../logic/offers';
import { IImageInfo, IOffer } from '../logic/types';

const SCIPY = { python: '3.11.2', numpy: '2.2.6', pandas: '2.2.3', scipy: '1.15.2', torch: null, cuda: null };
const scipy: IImageInfo = { name: 'scipy', packages: SCIPY };
const torchCpu: IImageInfo = { name: 'pytorch', packages: { ...SCIPY, torch: '2.13.0+cpu' } };
const torchCuda: IImageInfo = { name: 'pytorch-cuda', packages: { ...SCIPY, torch: '2.13.0+cu124', cuda: '12.4' } };

const base = { healthy: true, available: true, cpus: 4, memory_mb: 16384 };
const offers: IOffer[] = [
  { ...base, provider_url: 'http://cpu', node: 'cpu-box', shape: 'cpu', gpus: 0, image_details: [scipy] },
  { ...base, provider_url: 'http://cpu-torch', node: 'cpu-torch', shape: 'cpu', gpus: 0, image_details: [torchCpu] },
  // a GPU node whose torch is the CPU wheel: no use for a torch notebook's GPU code
  { ...base, provider_url: 'http://gpu-cpuwheel', node: 'gpu-cpuwheel', shape: 'gpu', gpus: 1, image_details: [scipy, torchCpu] },
  { ...base, provider_url: 'http://gpu', node: 'gpu-box', shape: 'a100', gpus: 1, image_details: [scipy, torchCuda] },
  { ...base, provider_url: 'http://gpu-plain', node: 'gpu-plain', shape: 'gpu', gpus: 2, image_details: [scipy] }
];
const names = (list: IOffer[]) => list.map(o => o.node);
const queryOf = (...cells: string[]) => needsQuery(notebookImports(cells)).query;

describe('a notebook’s imports (issue #21)', () => {
  it('reads plain, dotted, aliased, from- and indented imports', () => {
    expect(sourceImports('import numpy as np, pandas\nfrom sklearn.linear_model import Ridge')).toEqual([
      'numpy',
      'pandas',
      'sklearn'
    ]);
    expect(sourceImports('import torch.nn.functional as F; import os')).toEqual(['os', 'torch']);
    expect(sourceImports('try:\n    import cupy  # optional\nexcept ImportError:\n    pass')).toEqual(['cupy']);
  });

  it('leaves out what is not a Python import', () => {
    expect(sourceImports('from . import local\nfrom .util import x')).toEqual([]);
    expect(sourceImports('%%bash\nimport torch')).toEqual([]); // a cell magic's body
    expect(sourceImports('%pip install torch\n!pip install jax\nfiles = !ls\ntorch?')).toEqual([]);
    expect(sourceImports('"""\nimport torch\n"""\nimport numpy')).toEqual(['numpy']); // a docstring
    expect(sourceImports('important = 1\nimports = ["torch"]')).toEqual([]);
  });

  it('collects the imports of every cell, once each', () => {
    expect(notebookImports(['import torch', 'import torch\nimport pandas as pd', ''])).toEqual(['pandas', 'torch']);
  });
});

describe('what a notebook needs, as the offers view’s filter', () => {
  it('torch: GPU offers with a CUDA build of torch', () => {
    const needs = needsQuery(notebookImports(['import torch', 'import os, json']));
    expect(needs).toEqual({ query: 'gpus>=1 has:torch cuda', because: ['torch'] });
    expect(parseFilter(needs.query).errors).toEqual([]);
    expect(names(filterOffers(offers, needs.query))).toEqual(['gpu-box']);
  });

  it('a library on top of torch needs torch in the image too', () => {
    expect(queryOf('import pytorch_lightning as pl')).toBe('gpus>=1 has:torch cuda');
    expect(queryOf('from torchvision import models', 'import pandas')).toBe(
      'gpus>=1 has:torch has:pandas has:torchvision cuda'
    );
  });

  it('a GPU framework no image lists asks for a GPU only (it installs at launch)', () => {
    expect(queryOf('import jax.numpy as jnp')).toBe('gpus>=1');
    expect(names(filterOffers(offers, queryOf('import tensorflow as tf')))).toEqual(['gpu-cpuwheel', 'gpu-box', 'gpu-plain']);
  });

  it('the data stack: offers with those packages in an image, GPU or not', () => {
    const query = queryOf('import numpy as np\nimport pandas as pd\nfrom sklearn import svm');
    expect(query).toBe('has:numpy has:pandas has:scikit-learn');
    expect(names(filterOffers(offers, 'has:numpy has:pandas'))).toEqual(names(offers));
    expect(names(filterOffers(offers, query))).toEqual([]); // no image here lists scikit-learn
  });

  it('imports that need nothing particular leave the view unfiltered', () => {
    expect(needsQuery(notebookImports(['import os, requests', '%matplotlib inline']))).toEqual({ query: '', because: [] });
    expect(needsQuery([])).toEqual({ query: '', because: [] });
  });
});

describe('the has: filter', () => {
  it('is a package of an image at any version', () => {
    expect(parseFilter('has:torch has:Scikit_Learn').packages).toEqual([{ name: 'torch' }, { name: 'scikit-learn' }]);
    expect(names(filterOffers(offers, 'has:torch'))).toEqual(['cpu-torch', 'gpu-cpuwheel', 'gpu-box']);
    expect(names(filterOffers(offers, 'has:torch cuda'))).toEqual(['gpu-box']); // in one image
    expect(names(filterOffers(offers, 'has:jax'))).toEqual([]);
  });
});

describe('the picker entry', () => {
  it('is the walnut-new kernelspec, or one its metadata marks', () => {
    expect(isPickerKernel(PICKER_KERNEL)).toBe(true);
    expect(isPickerKernel('walnut-x', { metadata: { walnut: { picker: true } } })).toBe(true);
    expect(isPickerKernel('walnut-s-abc', { metadata: { walnut: { session: 's-abc' } } })).toBe(false);
    expect(isPickerKernel('python3', null)).toBe(false);
    expect(isPickerKernel(undefined)).toBe(false);
  });

  it('switches the notebook only for the launch of the offer chosen for it', () => {
    const request = { provider_url: 'http://gpu', shape: 'a100', budget_mist: 1 };
    expect(isLaunchOf('http://gpu#a100', request)).toBe(true);
    expect(isLaunchOf('http://gpu#other', request)).toBe(false);
    expect(isLaunchOf(undefined, request)).toBe(false);
  });
});
