// `tendril observe` (hubble observe): flows of the cluster through the lab's relay, or of one node; plus
// `observe status` (hubble status) and `observe nodes` (hubble list nodes).
import fs from 'node:fs';
import { Option, type Command } from 'commander';
import { DEFAULT_SOCKET } from '../agent/index.js';
import { DEFAULT_LAB, findNode, labExists, listLabs, loadLab } from '../lab/lab.js';
import { labPaths } from '../lab/paths.js';
import {
  DICT_SEPARATOR,
  HealthClient,
  ObserveError,
  ObserverClient,
  OUTPUT_FORMATS,
  Relay,
  type RelayPeer,
  alignRows,
  compactLine,
  dictBlock,
  formatStampMilli,
  jsonLine,
  observerSocketFor,
  relaySocketIn,
  tableHeader,
  tableRow,
  type FlowsQuery,
  type FlowsResponse,
  type FormatOptions,
  type OutputFormat,
  buildQuery,
  type FilterArg,
} from '../observe/index.js';

interface GlobalOpts {
  lab?: string;
  node?: string;
  socket?: string;
  server?: string;
}

/**
 * Which flow server to ask: --server; else the observer of the agent given by --socket or --lab/--node; else the
 * relay of the running lab (cluster-wide); else the observer next to the default agent socket.
 */
export function resolveObserveServer(g: GlobalOpts): string {
  if (g.server) return g.server;
  if (g.socket) return observerSocketFor(g.socket);
  if (g.node) {
    const st = loadLab(g.lab ?? DEFAULT_LAB);
    return observerSocketFor(findNode(st, g.node).socket);
  }
  if (g.lab) {
    loadLab(g.lab); // a clear "lab is not up" beats "cannot reach …/relay.sock"
    return relaySocketIn(labPaths(g.lab).dir);
  }
  if (fs.existsSync(DEFAULT_SOCKET)) return observerSocketFor(DEFAULT_SOCKET);
  const labs = labExists(DEFAULT_LAB) ? [DEFAULT_LAB] : listLabs();
  if (labs.length === 1) return relaySocketIn(labPaths(labs[0]!).dir);
  return observerSocketFor(DEFAULT_SOCKET);
}

/** Writes responses as `hubble observe` does: flows to stdout, node problems and lost events noted on stderr. */
export class FlowPrinter {
  private lines = 0;
  private readonly rows: string[][] = [];
  private widths: number[] = [];

  constructor(
    private readonly format: OutputFormat,
    private readonly opts: FormatOptions,
    private readonly out: (s: string) => void,
    private readonly err: (s: string) => void,
    /** Table rows are printed as they come (following) instead of aligned at the end. */
    private readonly streaming = false,
  ) {}

  write(r: FlowsResponse): void {
    if (r.kind === 'node_status') {
      const s = r.node_status;
      if (s.state_change !== 'NODE_UNAVAILABLE' && s.state_change !== 'NODE_ERROR') return;
      if (this.format === 'json' || this.format === 'jsonpb') {
        this.err(JSON.stringify({ node_status: s, ...(r.node_name ? { node_name: r.node_name } : {}), ...(r.time ? { time: r.time } : {}) }) + '\n');
        return;
      }
      const prefix = `${formatStampMilli(r.time, this.opts.utc)}${r.node_name ? ` [${r.node_name}]` : ''}`;
      const msg =
        s.state_change === 'NODE_UNAVAILABLE'
          ? `${prefix}: ${s.node_names.length} nodes are unavailable: ${s.node_names.join(', ')}`
          : `${prefix}: Error ${JSON.stringify(s.message ?? '')} on ${s.node_names.length} nodes: ${s.node_names.join(', ')}`;
      this.err(msg + '\n');
      return;
    }
    if (r.kind === 'lost_events') {
      if (this.format === 'json' || this.format === 'jsonpb') this.out(JSON.stringify({ lost_events: r.lost_events, ...(r.node_name ? { node_name: r.node_name } : {}) }) + '\n');
      else this.out(`EVENTS LOST: ${r.lost_events.source} ${r.lost_events.num_events_lost}${r.node_name ? ` [${r.node_name}]` : ''}\n`);
      return;
    }
    const f = r.flow;
    switch (this.format) {
      case 'compact':
        this.out(compactLine(f, this.opts) + '\n');
        break;
      case 'dict':
        if (this.lines > 0) this.out(DICT_SEPARATOR + '\n');
        this.out(dictBlock(f, this.opts) + '\n');
        break;
      case 'json':
      case 'jsonpb':
        this.out(jsonLine(f) + '\n');
        break;
      case 'table': {
        const row = tableRow(f, this.opts);
        if (!this.streaming) this.rows.push(row);
        else {
          if (this.lines === 0) this.printRow(tableHeader(this.opts));
          this.printRow(row);
        }
        break;
      }
    }
    this.lines++;
  }

  private printRow(row: string[]): void {
    this.widths = row.map((c, i) => Math.max(this.widths[i] ?? 0, c.length));
    this.out(row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(this.widths[i]! + 3))).join('').trimEnd() + '\n');
  }

  /** Prints what was held back (an aligned table). */
  end(): void {
    if (this.format === 'table' && !this.streaming && this.rows.length > 0) this.out(alignRows([tableHeader(this.opts), ...this.rows]));
  }
}

/** Runs one GetFlows and prints it; resolves when the server ends the stream or `signal` aborts (following). */
export async function observeFlows(
  address: string,
  q: FlowsQuery,
  format: OutputFormat,
  opts: FormatOptions,
  out: (s: string) => void,
  err: (s: string) => void,
  signal?: AbortSignal,
): Promise<void> {
  const client = new ObserverClient(address);
  const printer = new FlowPrinter(format, opts, out, err, q.follow === true);
  try {
    const h = client.getFlows(q, (r) => printer.write(r));
    const onAbort = (): void => h.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await h.done;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
    printer.end();
  } finally {
    client.close();
  }
}

/** The lab's nodes as relay peers (their observer sockets). */
export function labPeers(lab: string): RelayPeer[] {
  return loadLab(lab).nodes.map((n) => ({ name: n.name, address: observerSocketFor(n.socket) }));
}

export interface RelayRunOptions {
  listen: string;
  tcpPort?: number;
  peers: RelayPeer[];
  /** Re-read the peer list this often (a lab gains and loses nodes). */
  refresh?: { everyMs: number; peers: () => RelayPeer[] };
}

/** Runs a relay until `signal` aborts; `started` gets the relay once it listens. */
export async function runRelay(o: RelayRunOptions, signal: AbortSignal, started?: (r: Relay) => void): Promise<void> {
  const relay = new Relay({ socketPath: o.listen, peers: o.peers, ...(o.tcpPort !== undefined ? { tcpPort: o.tcpPort } : {}) });
  await relay.start();
  const refresh = o.refresh;
  const timer = refresh
    ? setInterval(() => {
        try {
          relay.setPeers(refresh.peers());
        } catch {
          // The lab state is being rewritten or the lab is going down: keep the last known nodes.
        }
      }, refresh.everyMs)
    : undefined;
  started?.(relay);
  try {
    if (!signal.aborted) await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
  } finally {
    if (timer) clearInterval(timer);
    await relay.stop();
  }
}

function humanDuration(ns: bigint): string {
  let s = Number(ns / 1_000_000_000n);
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d > 0) return `${d}d${h}h`;
  if (h > 0) return `${h}h${m}m`;
  if (m > 0) return `${m}m${s}s`;
  return `${s}s`;
}

function ratio(cur: number, max: number): string {
  return max > 0 ? ` (${((cur / max) * 100).toFixed(2)}%)` : '';
}

const FILTER_OPTIONS: Array<[string, string]> = [
  ['--pod <[ns/]pod>', 'flows from or to pods with this name prefix (namespace "default" unless given)'],
  ['--from-pod <[ns/]pod>', 'flows from pods with this name prefix'],
  ['--to-pod <[ns/]pod>', 'flows to pods with this name prefix'],
  ['-n, --namespace <ns>', 'flows from or to this namespace (with pod flags: the namespace of the pods)'],
  ['--from-namespace <ns>', 'flows from this namespace'],
  ['--to-namespace <ns>', 'flows to this namespace'],
  ['-l, --label <selector>', 'flows from or to endpoints matching this label selector (e.g. app=curl, k8s:app in (a,b))'],
  ['--from-label <selector>', 'flows from endpoints matching this label selector'],
  ['--to-label <selector>', 'flows to endpoints matching this label selector'],
  ['--ip <ip|cidr>', 'flows from or to this IP or CIDR'],
  ['--from-ip <ip|cidr>', 'flows from this IP or CIDR'],
  ['--to-ip <ip|cidr>', 'flows to this IP or CIDR'],
  ['--port <port>', 'flows from or to this L4 port'],
  ['--from-port <port>', 'flows from this L4 port'],
  ['--to-port <port>', 'flows to this L4 port'],
  ['--identity <id>', 'flows from or to this security identity (number or reserved name)'],
  ['--from-identity <id>', 'flows from this security identity'],
  ['--to-identity <id>', 'flows to this security identity'],
  ['--protocol <proto>', 'tcp, udp, sctp, icmp, icmpv4, icmpv6, http'],
  ['--verdict <verdict>', 'FORWARDED, DROPPED, AUDIT, REDIRECTED, ERROR, TRACED, TRANSLATED'],
  ['-t, --type <type[:sub]>', 'event type: trace[:to-endpoint|…], drop, policy-verdict, l7'],
  ['--http-status <code>', 'L7 responses with this status code (200) or code prefix (4+, 40+)'],
  ['--http-method <method>', 'L7 flows with this HTTP method (GET, POST, …)'],
  ['--http-path <regex>', 'L7 flows whose URL path matches this regular expression'],
  ['--node-name <pattern>', 'flows observed on nodes matching this pattern (* wildcard)'],
  ['--traffic-direction <dir>', 'ingress or egress'],
  ['--tcp-flags <flags>', 'flows with all these TCP flags set (e.g. SYN or SYN,ACK)'],
  ['--drop-reason-desc <reason>', 'drops with this reason (e.g. POLICY_DENIED)'],
  ['--interface <name|index>', 'flows observed on this interface'],
  ['--ip-version <4|6>', 'IPv4 or IPv6 flows'],
  ['--uuid <uuid>', 'the flow with this UUID'],
];

function positiveInt(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1) throw new Error(`"${v}" is not a positive number`);
  return n;
}

/** Where command output goes (tests pass their own sinks). */
export interface CliIO {
  out(s: string): void;
  err(s: string): void;
}

const STDIO: CliIO = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };

export function registerObserve(program: Command, io: CliIO = STDIO): void {
  const cmd = program
    .command('observe')
    .description('observe flows like `hubble observe`: the whole cluster through the lab relay, or one node with --node')
    .option('--server <address>', 'flow server: unix:///path.sock or host:port (default: the lab relay, or the node given with --node)')
    .addOption(new Option('-o, --output <format>', 'output format').choices([...OUTPUT_FORMATS]).default('compact'))
    .option('--last <n>', 'the last N matching flows (default 20 unless following or a time range is given)', positiveInt)
    .option('--first <n>', 'the first N matching flows in the buffer', positiveInt)
    .option('--all', 'all matching flows in the buffer')
    .option('-f, --follow', 'keep printing flows as they happen')
    .option('--since <time>', 'flows since this time (5m, 1h30m, RFC 3339, "Jan  2 15:04:05.000")')
    .option('--until <time>', 'flows until this time')
    .option('--print-node-name', 'print the node of each flow')
    .option('--utc', 'print times in UTC')
    .option('--not', 'negate the next filter flag');
  for (const [flags, desc] of FILTER_OPTIONS) cmd.option(flags, desc);

  // Filter flags are kept in command-line order: `--not` applies to the flag right after it.
  const filters: FilterArg[] = [];
  cmd.on('option:not', () => filters.push({ flag: 'not' }));
  for (const [flags] of FILTER_OPTIONS) {
    const name = /--([a-z-]+)/.exec(flags)![1]!;
    cmd.on(`option:${name}`, (value: string) => filters.push({ flag: name, value }));
  }

  cmd.action(async (o: Record<string, unknown>) => {
    const g = cmd.optsWithGlobals<GlobalOpts>();
    const given = filters.splice(0);
    const q = buildQuery({
      filters: given,
      ...(o['last'] !== undefined ? { last: o['last'] as number } : {}),
      ...(o['first'] !== undefined ? { first: o['first'] as number } : {}),
      all: o['all'] === true,
      follow: o['follow'] === true,
      ...(o['since'] !== undefined ? { since: o['since'] as string } : {}),
      ...(o['until'] !== undefined ? { until: o['until'] as string } : {}),
    });
    const address = resolveObserveServer(g);
    const ac = new AbortController();
    const stop = (): void => ac.abort();
    const pipe = (e: NodeJS.ErrnoException): void => {
      if (e.code === 'EPIPE') ac.abort(); // `tendril observe -f | head` ends when head does
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    process.stdout.on('error', pipe);
    try {
      await observeFlows(
        address,
        q,
        o['output'] as OutputFormat,
        { nodeName: o['printNodeName'] === true, utc: o['utc'] === true },
        io.out,
        io.err,
        ac.signal,
      );
    } catch (err) {
      if (err instanceof ObserveError && err.code === 'TENDRIL_ERR_OBSERVE_UNREACHABLE' && address.endsWith('relay.sock')) {
        throw new ObserveError(err.code, `${err.message} (is the lab's relay running? \`tendril observe relay\` starts one; --node NODE asks one node)`, { cause: err });
      }
      throw err;
    } finally {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      process.stdout.off('error', pipe);
    }
  });

  cmd
    .command('status')
    .description('flow server status, like `hubble status`')
    .option('--server <address>', 'flow server: unix:///path.sock or host:port')
    .action(async (_o: unknown, sub: Command) => {
      const address = resolveObserveServer(sub.optsWithGlobals<GlobalOpts>());
      const health = new HealthClient(address);
      const client = new ObserverClient(address);
      try {
        // As hubble: the standard health service first, and nothing more from a server that is not SERVING.
        const st = await health.check();
        io.out(`Healthcheck (via ${address}): ${st === 'SERVING' ? 'Ok' : `Unavailable: ${st}`}\n`);
        if (st !== 'SERVING') throw new ObserveError('TENDRIL_ERR_OBSERVE_SERVER', `not healthy: the flow server at ${address} answers ${st}`);
        const s = await client.serverStatus();
        const lines = [`Current/Max Flows: ${s.num_flows.toLocaleString('en-US')}/${s.max_flows.toLocaleString('en-US')}${ratio(s.num_flows, s.max_flows)}`];
        const uptime = Number(s.uptime_ns) / 1e9;
        const rate = s.flows_rate > 0 ? s.flows_rate : uptime > 0 ? s.seen_flows / uptime : 0;
        lines.push(`Flows/s: ${rate.toFixed(2)}`);
        if (s.num_connected_nodes !== undefined) {
          const total = s.num_unavailable_nodes !== undefined ? `/${s.num_connected_nodes + s.num_unavailable_nodes}` : '';
          lines.push(`Connected Nodes: ${s.num_connected_nodes}${total}`);
        }
        if (s.num_unavailable_nodes) {
          lines.push(`Unavailable Nodes: ${s.num_unavailable_nodes}`);
          for (const n of s.unavailable_nodes ?? []) lines.push(`  - ${n}`);
        }
        io.out(lines.join('\n') + '\n');
      } finally {
        health.close();
        client.close();
      }
    });

  cmd
    .command('relay')
    .description('serve the Observer API for several nodes, merging their flows (hubble-relay); with a lab: its nodes')
    .option('--listen <path>', 'unix socket to serve on (default: relay.sock in the lab\'s directory)')
    .option('--tcp-port <port>', 'also serve on 127.0.0.1:PORT', (v: string) => Number(v))
    .option('--peer <name=address>', 'a node\'s flow server (unix:///path.sock or host:port), repeatable; default: the lab\'s nodes', (v: string, prev: string[] = []) => [...prev, v])
    .action(async (o: { listen?: string; tcpPort?: number; peer?: string[] }, sub: Command) => {
      const g = sub.optsWithGlobals<GlobalOpts>();
      const lab = g.lab ?? (labExists(DEFAULT_LAB) ? DEFAULT_LAB : undefined);
      const peers = (o.peer ?? []).map((p) => {
        const i = p.indexOf('=');
        if (i <= 0) throw new Error(`Invalid --peer "${p}": expected NAME=ADDRESS`);
        return { name: p.slice(0, i), address: p.slice(i + 1) };
      });
      if (!o.listen && !lab) throw new Error('No lab is up: give --listen PATH and --peer NAME=ADDRESS');
      const listen = o.listen ?? relaySocketIn(labPaths(lab!).dir);
      const fromLab = peers.length === 0 && lab !== undefined;
      const ac = new AbortController();
      const stop = (): void => ac.abort();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      try {
        await runRelay(
          {
            listen,
            ...(o.tcpPort !== undefined ? { tcpPort: o.tcpPort } : {}),
            peers: fromLab ? labPeers(lab) : peers,
            ...(fromLab ? { refresh: { everyMs: 2000, peers: () => labPeers(lab) } } : {}),
          },
          ac.signal,
          (r) => io.out(`Relay listening on ${listen}${r.tcpAddress ? ` and ${r.tcpAddress}` : ''} for ${r.peerList.length} node(s): ${r.peerList.map((p) => p.name).join(', ')}\n`),
        );
      } finally {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
      }
    });

  cmd
    .command('nodes')
    .description('nodes behind the flow server, like `hubble list nodes`')
    .option('--server <address>', 'flow server: unix:///path.sock or host:port')
    .action(async (_o: unknown, sub: Command) => {
      const client = new ObserverClient(resolveObserveServer(sub.optsWithGlobals<GlobalOpts>()));
      try {
        const nodes = await client.getNodes();
        const rows = nodes.map((n) => {
          const up = Number(n.uptime_ns) / 1e9;
          const connected = n.state === 'NODE_CONNECTED';
          return [
            n.name,
            connected ? 'Connected' : n.state === 'NODE_UNAVAILABLE' ? 'Unavailable' : n.state,
            connected ? humanDuration(n.uptime_ns) : 'N/A',
            connected && up > 0 ? (n.seen_flows / up).toFixed(2) : 'N/A',
            connected ? `${n.num_flows}/${n.max_flows}${ratio(n.num_flows, n.max_flows)}` : 'N/A',
          ];
        });
        io.out(alignRows([['NAME', 'STATUS', 'AGE', 'FLOWS/S', 'CURRENT/MAX-FLOWS'], ...rows]));
      } finally {
        client.close();
      }
    });
}
