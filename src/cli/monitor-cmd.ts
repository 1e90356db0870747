// `tendril monitor` (cilium-dbg monitor): a node's raw datapath events, one line each, or dissected with -vv.
import type { Command } from 'commander';
import { resolveSocket } from './node-cmd.js';
import { collect } from './options.js';
import {
  MONITOR_TYPES,
  MonitorClient,
  formatL7Monitor,
  formatMonitorEvent,
  fromMonitorEvent,
  monitorHeader,
  observerSocketFor,
  type MonitorEvent,
  type MonitorFilter,
  type MonitorFormatOptions,
  validateMonitorFilter,
} from '../observe/index.js';

interface GlobalOpts {
  lab?: string;
  node?: string;
  socket?: string;
  server?: string;
}

function collectIds(v: string, prev: number[] = []): number[] {
  if (!/^\d+$/.test(v)) throw new Error(`"${v}" is not an endpoint ID`);
  return [...prev, Number(v)];
}

/** Prints events until `signal` aborts or the server goes away; `ready` runs once the subscription is live. */
export async function monitorEvents(
  address: string,
  filter: MonitorFilter,
  fmt: Omit<MonitorFormatOptions, 'ifname'>,
  out: (s: string) => void,
  opts: { signal?: AbortSignal; header?: boolean; ready?: () => void } = {},
): Promise<void> {
  validateMonitorFilter(filter);
  const client = new MonitorClient(address);
  try {
    if (opts.header !== false && !fmt.json) {
      const info = await client.info();
      out(monitorHeader(info.numCpus, info.ringBytes));
    }
    const h = client.events(
      filter,
      (m: MonitorEvent | undefined, lost: number) => {
        if (lost > 0) out(`Lost ${lost} events\n`);
        if (m?.type === 'l7') out(fmt.json ? JSON.stringify(m) + '\n' : (formatL7Monitor(m) ?? ''));
        else if (m) out(formatMonitorEvent(fromMonitorEvent(m), { ...fmt, ifname: m.ifname }));
      },
      opts.ready,
    );
    const onAbort = (): void => h.cancel();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await h.done;
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
  } finally {
    client.close();
  }
}

export function registerMonitor(program: Command, out: (s: string) => void = (s) => process.stdout.write(s)): void {
  const cmd = program
    .command('monitor')
    .description('print datapath events of a node like `cilium-dbg monitor` (trace, drop, policy-verdict, L7 access log)')
    .option('--server <address>', 'the node\'s flow server (default: observer.sock next to the agent socket)')
    .option('-v, --verbose', 'more detail: -v header lines, -vv with packet dissection', (_v: string, prev: number) => prev + 1, 0)
    .option('-n, --numeric', 'print identities as numbers')
    .option('-j, --json', 'one JSON object per event')
    .option('--related-to <id>', 'events of this endpoint (source or destination), repeatable', collectIds)
    .option('--from <id>', 'events whose source endpoint is this one, repeatable', collectIds)
    .option('--to <id>', 'events whose destination endpoint is this one, repeatable', collectIds)
    .option('-t, --type <type>', `event types, repeatable: ${MONITOR_TYPES.join(', ')}`, collect);

  cmd.action(async (o: { server?: string; verbose: number; numeric?: boolean; json?: boolean; relatedTo?: number[]; from?: number[]; to?: number[]; type?: string[] }) => {
    const g = cmd.optsWithGlobals<GlobalOpts>();
    const address = o.server ?? observerSocketFor(resolveSocket(g));
    const filter: MonitorFilter = { types: o.type ?? [], relatedTo: o.relatedTo ?? [], from: o.from ?? [], to: o.to ?? [] };
    const ac = new AbortController();
    const stop = (): void => ac.abort();
    const pipe = (e: NodeJS.ErrnoException): void => {
      if (e.code === 'EPIPE') ac.abort(); // `tendril monitor | head` ends when head does
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    process.stdout.on('error', pipe);
    try {
      await monitorEvents(address, filter, { verbosity: o.verbose, numeric: o.numeric === true, json: o.json === true }, out, { signal: ac.signal });
    } finally {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      process.stdout.off('error', pipe);
    }
  });
}
