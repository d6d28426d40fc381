/** The JSON shapes of the /walnut REST API (see jupyter_walnut/renter/extension/handlers.py). */

import type { IEnvironment, ILaunchStep } from './launch';

export interface IOffer {
  provider_url: string;
  healthy: boolean;
  error?: string;
  node?: string;
  provider_address?: string;
  region?: string;
  latency_ms?: number;
  runtime?: string;
  shape?: string;
  gpus?: number;
  gpu_model?: string | null;
  gpu_memory_mb?: number | null;
  cpus?: number;
  memory_mb?: number;
  price_mist_per_second?: number | string;
  price_mist_per_hour?: number | string;
  available?: boolean;
  free_session_slots?: number;
  images?: string[];
  /** The images with their key package versions (absent or null packages: not listed). */
  image_details?: IImageInfo[];
  /** With an image filter on the server: the images that met it. */
  matching_images?: string[];
  max_session_seconds?: number;
  version?: string | null;
  /** Whether the time the provider spends installing requirements is billed. */
  bills_install?: boolean;
  /** 0-100 from evidence (jupyter_walnut/renter/reputation), null without any. */
  reliability?: number | null;
  /** The last session-start check on this provider: passed, failed or never run. */
  verified?: boolean | null;
  attested?: boolean;
  uptime_pct?: number | null;
  last_seen?: number | null;
  evidence?: { [key: string]: number | boolean } | null;
  /** Median GFLOP/s this renter's own probe measured in passed checks here (issue #21). */
  verified_gflops?: number | null;
  verified_checks?: number;
}

/** One image of an offer (renter/offer_filters.py image_details), provider-written text. */
export interface IImageInfo {
  name: string;
  description?: string;
  flavor?: string | null;
  packages?: { [name: string]: string | null } | null;
}

export type SessionStatus = 'starting' | 'running' | 'stopped' | 'failed';

export interface IUsage {
  gpu_utilization_pct?: number | null;
  gpu_memory_used_mb?: number | null;
  cpu_pct?: number | null;
}

/** Where a session's payment channel stands (the server's Settlement enum). */
export type Settlement = 'none' | 'open' | 'closing' | 'settled' | 'lost' | 'unknown';

export interface ISession {
  id: string;
  provider_url: string;
  node: string;
  shape: string;
  image: string;
  gpus: number;
  gpu_model?: string | null;
  cpus: number;
  memory_mb: number;
  price_mist_per_second: number | string;
  max_seconds: number;
  budget_mist: number | string;
  status: SessionStatus;
  reason: string;
  created_at: number;
  started_at?: number | null;
  ended_at?: number | null;
  running_seconds: number;
  cost_mist: number | string;
  remaining_mist: number | string;
  channel_id?: string | null;
  kernel_name: string;
  // the channel's money, integer MIST (numbers or decimal strings)
  settlement: Settlement;
  deposit_mist: number | string;
  voucher_mist: number | string;
  claimed_mist: number | string;
  refunded_mist: number | string;
  settlement_error?: string | null;
  refund_at?: number | null;
  usage?: IUsage | null;
  extra?: { [key: string]: any }; // other facts (verification), never money
  /** The steps its launch went through, in order. */
  launch?: ILaunchStep[];
  /** The provider preparing its requirements, as last reported (issue #15). */
  environment?: IEnvironment | null;
  has_requirements?: boolean;
  /** Warnings before the end (issue #16): budget threshold, minutes left. */
  warnings?: IWarning[] | null;
  /** Where the session's outputs went or go when it ends (issue #16). */
  results?: IResults | null;
  /** The provider's idle clock (issue #17), as last seen; null when not running. */
  idle?: { idle_s: number; threshold_s: number; stop_in_s: number | null } | null;
  /** Away mode (issue #17): null when off. */
  away?: IAway | null;
  /** Notebooks the server wrote this session's away outputs into (issue #17). */
  outputs_written?: { path: string; at: number }[];
}

/** A session's away mode, as the renter server states it. */
export interface IAway {
  until: number;
  budget_mist: number | string;
  top_mist: number | string;
  claimable_mist: number | string;
  trust_bound: string;
}

export interface IWarning {
  kind: string;
  message: string;
  seconds_left?: number | null;
  /** What the notification offers: "top_up", "save_results". */
  actions?: string[];
}

export interface IResults {
  state: string;
  /** Where they are on this machine, e.g. walnut-results/<sid>/ beside the notebook. */
  path?: string | null;
  files?: number | unknown[] | null;
  bytes?: number | null;
  /** Until when the provider keeps them (epoch seconds), if it keeps them. */
  kept_until?: number | null;
  reason?: string | null;
  error?: string | null;
}

export interface IStatus {
  active_sessions: number;
  cost_mist: number | string;
  budget_mist: number | string;
  remaining_mist: number | string;
  address: string;
}

export interface IWallet {
  address: string;
  public_key?: string;
  network?: string;
  balance_mist?: number | string | null;
}

export interface ILaunchRequest {
  provider_url: string;
  shape: string;
  image?: string;
  max_seconds?: number;
  budget_mist?: number;
  /** pip requirements text the provider installs before the kernel starts. */
  requirements?: string;
  /** Or a notebook's path under the server root: its imports at the server's versions. */
  requirements_from_notebook?: string;
  /** A notebook's path under the server root: its folder goes to the workspace first. */
  folder_from_notebook?: string;
  /** Away mode once it runs (issue #17): MIST as a decimal string, seconds. */
  away?: { budget_mist: string; seconds: number };
}

/** What launching with a folder would send (GET /walnut/folder), before anything is paid. */
export interface IFolderPlan {
  folder: string;
  files: number;
  bytes: number;
  ignored: number;
  links: number;
  max_bytes: number;
  fits: boolean;
  text: string;
}
