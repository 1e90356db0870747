// The ip-masq-agent's non-masquerade set: the config file (YAML or JSON: nonMasqueradeCIDRs, masqLinkLocal), Cilium's
// defaults for an empty one, and a watcher that re-reads the file when it changes.
import fs from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { formatCidr, parseCidr } from '../util/ip.js';
import { NatError } from './errors.js';

/** Cilium's defaults (pkg/ipmasq) when the file names no CIDR: RFC 1918, shared, documentation and benchmark ranges, 240/4. */
export const DEFAULT_NON_MASQ_CIDRS: readonly string[] = [
  '10.0.0.0/8',
  '172.16.0.0/12',
  '192.168.0.0/16',
  '100.64.0.0/10',
  '192.0.0.0/24',
  '192.0.2.0/24',
  '192.88.99.0/24',
  '198.18.0.0/15',
  '198.51.100.0/24',
  '203.0.113.0/24',
  '240.0.0.0/4',
];
/** Not masqueraded either unless masqLinkLocal. */
export const LINK_LOCAL_CIDR = '169.254.0.0/16';

export interface IpMasqFile {
  nonMasqueradeCIDRs: string[];
  masqLinkLocal: boolean;
}

/** Parses the file's text (YAML, of which JSON is a subset); `where` names it in errors. */
export function parseIpMasqConfig(text: string, where: string): IpMasqFile {
  const bad = (what: string): never => {
    throw new NatError('TENDRIL_ERR_IPMASQ_CONFIG', `Invalid ip-masq-agent config ${where}: ${what}`);
  };
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    bad((err as Error).message.split('\n')[0]!);
  }
  if (doc === null || doc === undefined) return { nonMasqueradeCIDRs: [], masqLinkLocal: false };
  if (typeof doc !== 'object' || Array.isArray(doc)) bad('expected a mapping with nonMasqueradeCIDRs and masqLinkLocal');
  const o = doc as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (k !== 'nonMasqueradeCIDRs' && k !== 'masqLinkLocal' && k !== 'masqLinkLocalIPv6' && k !== 'resyncInterval') bad(`unknown field "${k}"`);
  }
  const list = o['nonMasqueradeCIDRs'] ?? [];
  if (!Array.isArray(list)) bad('nonMasqueradeCIDRs is not a list');
  const cidrs: string[] = [];
  (list as unknown[]).forEach((c, i) => {
    if (typeof c !== 'string') bad(`nonMasqueradeCIDRs[${i}] is not a string`);
    try {
      cidrs.push(formatCidr(parseCidr(c as string)));
    } catch (err) {
      bad(`nonMasqueradeCIDRs[${i}]: ${(err as Error).message}`);
    }
  });
  const ll = o['masqLinkLocal'] ?? false;
  if (typeof ll !== 'boolean') bad('masqLinkLocal is not true or false');
  return { nonMasqueradeCIDRs: cidrs, masqLinkLocal: ll as boolean };
}

/** The set in force for a file (undefined: none there): its CIDRs or Cilium's defaults, plus link-local unless masqLinkLocal. */
export function effectiveNonMasqCidrs(f: IpMasqFile | undefined): string[] {
  const base = f && f.nonMasqueradeCIDRs.length > 0 ? f.nonMasqueradeCIDRs : DEFAULT_NON_MASQ_CIDRS;
  const out = new Set(base);
  if (!f?.masqLinkLocal) out.add(LINK_LOCAL_CIDR);
  return [...out];
}

/** Reads the file: undefined when it does not exist (or is empty: the defaults apply). */
export function readIpMasqConfig(file: string): IpMasqFile | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new NatError('TENDRIL_ERR_IPMASQ_CONFIG', `Cannot read ip-masq-agent config ${file}: ${(err as Error).message}`, { cause: err });
  }
  return parseIpMasqConfig(text, file);
}

export interface IpMasqState {
  file: string;
  cidrs: string[];
  /** Whether the file existed at the last good read (false: the defaults). */
  fromFile: boolean;
  /** The last read's error, when it failed (the set in force is the one before). */
  error: string | null;
  loadedAt: string | null;
}

/**
 * Holds the set of one config file: read at start(), re-read on every change of the file's directory (fs.watch,
 * debounced), handed to apply() when it differs. A bad file is logged through onError and changes nothing.
 */
export class IpMasqWatcher {
  private watcher: fs.FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private st: IpMasqState;

  constructor(
    private readonly file: string,
    private readonly apply: (cidrs: string[]) => void,
    private readonly onError: (err: NatError) => void,
    private readonly debounceMs = 100,
  ) {
    this.st = { file, cidrs: [], fromFile: false, error: null, loadedAt: null };
  }

  get state(): IpMasqState {
    return { ...this.st, cidrs: [...this.st.cidrs] };
  }

  /** First read and the watch. A bad file at start is reported through onError and Cilium's defaults apply. */
  start(): void {
    this.reload();
    if (this.st.loadedAt === null) {
      const error = this.st.error;
      this.set(undefined);
      this.st.error = error;
    }
    const dir = path.dirname(this.file);
    fs.mkdirSync(dir, { recursive: true });
    this.watcher = fs.watch(dir, () => this.schedule());
    this.watcher.on('error', (err) => this.onError(new NatError('TENDRIL_ERR_IPMASQ_CONFIG', `Watching ${dir} failed: ${err.message}`, { cause: err })));
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.watcher?.close();
    this.watcher = undefined;
  }

  /** Re-reads now (also what a change triggers). */
  reload(): void {
    try {
      this.set(readIpMasqConfig(this.file));
    } catch (err) {
      const e = err instanceof NatError ? err : new NatError('TENDRIL_ERR_IPMASQ_CONFIG', (err as Error).message, { cause: err });
      this.st.error = e.message;
      this.onError(e);
    }
  }

  private schedule(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.reload();
    }, this.debounceMs);
  }

  private set(f: IpMasqFile | undefined): void {
    const cidrs = effectiveNonMasqCidrs(f);
    const changed = this.st.loadedAt === null || cidrs.length !== this.st.cidrs.length || cidrs.some((c, i) => c !== this.st.cidrs[i]);
    if (changed) this.apply(cidrs);
    this.st = { file: this.file, cidrs, fromFile: f !== undefined, error: null, loadedAt: new Date().toISOString() };
  }
}
