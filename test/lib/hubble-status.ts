// What `hubble status` (Hubble CLI v1.17, compact output) prints for a server, computed the way it does: a plain
// @grpc/grpc-js client from the upstream protos (grpc-health-check's health.proto, our Hubble-shaped observer.proto)
// calls Health/Check for "hubble.server.Observer", stops on anything but SERVING, then calls Observer/ServerStatus.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as HEALTH_PROTO } from 'grpc-health-check';
import { PROTO_DIR } from '../../src/observe/codec.js';

type Unary = (req: unknown, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: Record<string, unknown>) => void) => void;
type Ctor = new (target: string, creds: grpc.ChannelCredentials) => grpc.Client & Record<string, Unary>;

const OPTIONS: protoLoader.Options = { keepCase: true, enums: String, longs: String, oneofs: true };

function load<T>(file: string, includeDirs: string[]): T {
  return grpc.loadPackageDefinition(protoLoader.loadSync(file, { ...OPTIONS, includeDirs })) as unknown as T;
}

const health = load<{ grpc: { health: { v1: { Health: Ctor } } } }>(HEALTH_PROTO, []).grpc.health.v1.Health;
const observer = load<{ observer: { Observer: Ctor } }>('observer/observer.proto', [PROTO_DIR]).observer.Observer;

function call(client: grpc.Client & Record<string, Unary>, method: string, req: unknown): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    client[method]!.call(client, req, { deadline: Date.now() + 10_000 }, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

/** Go's %d with thousands separators (hubble's uint64Grouping). */
const grouped = (n: number): string => n.toLocaleString('en-US');

export interface HubbleStatus {
  /** What it prints on stdout. */
  lines: string[];
  /** The error it exits with ("not healthy", "failed getting status: …"), if any. */
  error?: string;
}

/** @param target what `--server` names, e.g. "unix:///run/tendril/observer.sock" (printed as given). */
export async function hubbleStatus(target: string): Promise<HubbleStatus> {
  const lines: string[] = [];
  const hc = new health(target, grpc.credentials.createInsecure());
  const obs = new observer(target, grpc.credentials.createInsecure());
  try {
    let st: string;
    try {
      st = String((await call(hc, 'Check', { service: 'hubble.server.Observer' }))['status']);
    } catch (err) {
      return { lines, error: `failed getting status: ${(err as grpc.ServiceError).message}` };
    }
    lines.push(`Healthcheck (via ${target}): ${st === 'SERVING' ? 'Ok' : `Unavailable: ${st}`}`);
    if (st !== 'SERVING') return { lines, error: 'not healthy' };

    const s = await call(obs, 'ServerStatus', {});
    const num = Number(s['num_flows'] ?? 0);
    const max = Number(s['max_flows'] ?? 0);
    lines.push(`Current/Max Flows: ${grouped(num)}/${grouped(max)}${max > 0 ? ` (${((num / max) * 100).toFixed(2)}%)` : ''}`);
    const rate = Number(s['flows_rate'] ?? 0);
    const uptime = Number(s['uptime_ns'] ?? 0) / 1e9;
    lines.push(`Flows/s: ${rate > 0 ? rate.toFixed(2) : uptime > 0 ? (Number(s['seen_flows'] ?? 0) / uptime).toFixed(2) : 'N/A'}`);
    const connected = s['num_connected_nodes'] as { value?: number } | null | undefined;
    const unavailable = s['num_unavailable_nodes'] as { value?: number } | null | undefined;
    if (connected) lines.push(`Connected Nodes: ${connected.value ?? 0}${unavailable ? `/${(unavailable.value ?? 0) + (connected.value ?? 0)}` : ''}`);
    if (unavailable && (unavailable.value ?? 0) > 0) {
      const names = [...((s['unavailable_nodes'] as string[] | undefined) ?? [])].sort();
      if (names.length === 0) lines.push(`Unavailable Nodes: ${unavailable.value}`);
      else lines.push(`Unavailable Nodes: ${unavailable.value}`, ...names.map((n) => `  - ${n}`));
    }
    return { lines };
  } finally {
    hc.close();
    obs.close();
  }
}
