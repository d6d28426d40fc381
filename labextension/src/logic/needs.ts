/**
 * "New Walnut kernel…" (issue #21): what a notebook needs, read from its code cells' imports,
 * as the offers view's filter. It imports torch: GPU offers with a CUDA build of torch in an
 * image; it imports pandas: offers with pandas in an image. Anything else can be installed at
 * launch (the launch form's requirements), so it does not narrow the offers.
 *
 * The import reading follows jupyter_walnut/renter/requirements.py (magics, shell escapes and
 * relative imports are not imports), line by line rather than with a Python parser.
 */

import { offerKey } from './offers';
import { ILaunchRequest } from './types';

/** The kernelspec the server writes for the picker entry (renter/kernelspecs.py). */
export const PICKER_KERNEL = 'walnut-new';

/** Whether a kernelspec is the picker entry: its name, or its `walnut.picker` metadata. */
export function isPickerKernel(name: string | undefined, spec?: { metadata?: { [key: string]: unknown } } | null): boolean {
  if (!name) {
    return false;
  }
  const walnut = spec?.metadata?.walnut as { picker?: unknown } | undefined;
  return name === PICKER_KERNEL || walnut?.picker === true;
}

/** Imports of frameworks that are there to use a GPU. */
const GPU_MODULES = new Set([
  'torch',
  'torchvision',
  'torchaudio',
  'lightning',
  'pytorch_lightning',
  'tensorflow',
  'jax',
  'jaxlib',
  'flax',
  'cupy',
  'cudf',
  'cuml',
  'cugraph',
  'triton',
  'vllm',
  'xformers',
  'flash_attn',
  'bitsandbytes',
  'deepspeed'
]);

/** Modules whose version offers list in their images (provider/image.py KEY_PACKAGES), by
 * import name, with the package name the filter uses. */
const IMAGE_PACKAGES: { [module: string]: string } = {
  torch: 'torch',
  torchvision: 'torchvision',
  numpy: 'numpy',
  pandas: 'pandas',
  scipy: 'scipy',
  sklearn: 'scikit-learn',
  matplotlib: 'matplotlib'
};

/** Modules that bring torch along: the image needs it too. */
const NEEDS_TORCH = new Set(['torchvision', 'torchaudio', 'lightning', 'pytorch_lightning']);

const NAME = /^[A-Za-z_]\w*$/;

/** The top-level modules one cell imports (absolute imports only). */
export function sourceImports(source: string): string[] {
  if (source.trimStart().startsWith('%%')) {
    return []; // a cell magic: its body is another language, or runs elsewhere
  }
  const found = new Set<string>();
  let inString: string | null = null; // inside a triple-quoted string
  for (const line of source.split(/\r?\n/)) {
    const stripped = line.trim();
    const quotes = stripped.match(/"""|'''/g) ?? [];
    if (inString) {
      if (quotes.some(q => q === inString) && quotes.length % 2 === 1) {
        inString = null;
      }
      continue;
    }
    if (quotes.length % 2 === 1) {
      inString = quotes[0] ?? null;
      continue;
    }
    if (/^[%!?]/.test(stripped) || /^[\w.,\s]+=\s*[!%]/.test(stripped) || stripped.endsWith('?')) {
      continue; // IPython syntax, not Python
    }
    for (const statement of stripped.split(';')) {
      addImports(statement.trim(), found);
    }
  }
  return [...found].sort();
}

function addImports(statement: string, found: Set<string>): void {
  const from = /^from\s+([\w.]+)\s+import\b/.exec(statement);
  if (from) {
    const top = from[1].split('.')[0];
    if (!from[1].startsWith('.') && NAME.test(top)) {
      found.add(top);
    }
    return;
  }
  const plain = /^import\s+(.+)$/.exec(statement);
  if (!plain) {
    return;
  }
  for (const part of plain[1].replace(/#.*$/, '').split(',')) {
    const top = part.trim().split(/\s+/)[0].split('.')[0];
    if (NAME.test(top)) {
      found.add(top);
    }
  }
}

/** The modules a notebook's code cells import, sorted. */
export function notebookImports(sources: string[]): string[] {
  const found = new Set<string>();
  for (const source of sources) {
    sourceImports(source).forEach(m => found.add(m));
  }
  return [...found].sort();
}

export interface INeeds {
  /** The offers view's filter: "" when the imports narrow nothing. */
  query: string;
  /** The imports that set it, for "filtered by what it imports: torch, pandas". */
  because: string[];
}

/** The offers filter for what these modules need (parseFilter's syntax). */
export function needsQuery(modules: string[]): INeeds {
  const gpu = modules.filter(m => GPU_MODULES.has(m));
  const packages = new Set<string>();
  for (const m of modules) {
    if (IMAGE_PACKAGES[m]) {
      packages.add(IMAGE_PACKAGES[m]);
    }
    if (NEEDS_TORCH.has(m)) {
      packages.add('torch');
    }
  }
  const parts: string[] = [];
  if (gpu.length) {
    parts.push('gpus>=1');
  }
  // torch first, then the rest by name: the filter reads as "GPU offers with torch, …"
  const ordered = [...packages].sort((a, b) => (a === 'torch' ? -1 : b === 'torch' ? 1 : a.localeCompare(b)));
  parts.push(...ordered.map(p => `has:${p}`));
  if (packages.has('torch') && gpu.length) {
    parts.push('cuda'); // a CUDA build of torch: the CPU wheel would leave the GPU unused
  }
  const because = modules.filter(m => GPU_MODULES.has(m) || IMAGE_PACKAGES[m] !== undefined);
  return { query: parts.join(' '), because };
}

/** Whether a launch is the one started from the offers view for a picker's notebook. */
export function isLaunchOf(offer: string | undefined, request: ILaunchRequest): boolean {
  return Boolean(offer) && offerKey(request) === offer;
}
