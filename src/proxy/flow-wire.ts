// The compact form of L7 flow records on the proxy → agent IPC: one message per batch, a table of the batch's
// connections (a keep-alive connection's many records name it once) and one flat row of primitives per record,
// header names left as sent (the agent lower-cases them). The proxy is the serial hop of every L7 request, so
// the work of building the records' full shape is moved to the agent, which runs beside it. Nothing is sampled
// away: every record the engine emits is decoded into one HttpFlowRecord.
import type { ConnectionInfo, HttpFlowRecord } from './types.js';

/**
 * A batch goes at the latest this long after its first record (flows reach observers within tens of ms)… Each
 * batch wakes the agent, which shares the node's CPUs with the proxy and the pods: at 1,000 requests/s a 5 ms
 * flush woke it 200 times a second for 10 records each.
 */
export const FLOW_FLUSH_MS = 20;
/** …or as soon as it holds this many records. */
export const FLOW_BATCH_MAX = 512;

/** Fields per record row (time, type|verdict|direction, conn, src, dst, method, url, protocol, code, headers, latency). */
const ROW = 11;
const TYPES = ['REQUEST', 'RESPONSE'] as const;
const VERDICTS = ['FORWARDED', 'DROPPED', 'ERROR'] as const;
const DIRECTIONS = [undefined, 'INGRESS', 'EGRESS'] as const;

/** One batch as it crosses the IPC (structured clone of arrays of primitives). */
export interface FlowBatch {
  /** srcIp, srcPort, dstIp, dstPort per connection. */
  conns: (string | number)[];
  rows: (string | number | string[])[];
}

/** What the engine hands the encoder: an HttpFlowRecord whose headers are the raw name/value list as received. */
export type RawFlow = Omit<HttpFlowRecord, 'time' | 'headers' | 'direction'> & {
  time: number;
  direction?: HttpFlowRecord['direction'] | undefined;
  /** Name, value, name, value… as sent (names in any case). */
  rawHeaders: readonly string[];
};

/** Collects records into batches; `take()` returns the batch so far and starts a new one. */
export class FlowBatcher {
  private conns: (string | number)[] = [];
  private rows: (string | number | string[])[] = [];
  private connIndex = new Map<ConnectionInfo, number>();

  get size(): number {
    return this.rows.length / ROW;
  }

  add(f: RawFlow): void {
    let ci = this.connIndex.get(f.conn);
    if (ci === undefined) {
      ci = this.conns.length / 4;
      this.conns.push(f.conn.srcIp, f.conn.srcPort, f.conn.dstIp, f.conn.dstPort);
      this.connIndex.set(f.conn, ci);
    }
    const kind = (f.type === 'RESPONSE' ? 1 : 0) | (VERDICTS.indexOf(f.verdict) << 1) | (DIRECTIONS.indexOf(f.direction) << 3);
    this.rows.push(f.time, kind, ci, f.srcIdentity, f.dstIdentity, f.method, f.url, f.protocol, f.code, f.rawHeaders as string[], f.latencyNs);
  }

  take(): FlowBatch {
    const b = { conns: this.conns, rows: this.rows };
    this.conns = [];
    this.rows = [];
    this.connIndex = new Map();
    return b;
  }
}

/** A decoded record before its headers are paired: HttpFlowRecord with the raw name/value list (as the observer takes it). */
export type WireRecord = Omit<HttpFlowRecord, 'headers' | 'time'> & { time: number; rawHeaders: readonly string[] };

/**
 * The records of a batch, in order, headers left as the raw name/value list (the agent's path: the observer pairs
 * and lower-cases them only if the flow is read). The records of one connection share one conn object. Throws on a
 * malformed batch (a proxy of another version).
 */
export function decodeRecords(b: FlowBatch): WireRecord[] {
  if (!Array.isArray(b?.conns) || !Array.isArray(b?.rows) || b.rows.length % ROW !== 0 || b.conns.length % 4 !== 0) throw new Error('malformed L7 flow batch');
  const conns: ConnectionInfo[] = [];
  for (let i = 0; i < b.conns.length; i += 4) conns.push({ srcIp: b.conns[i] as string, srcPort: b.conns[i + 1] as number, dstIp: b.conns[i + 2] as string, dstPort: b.conns[i + 3] as number });
  const out: WireRecord[] = [];
  const r = b.rows;
  for (let i = 0; i < r.length; i += ROW) {
    const kind = r[i + 1] as number;
    const conn = conns[r[i + 2] as number];
    const verdict = VERDICTS[(kind >> 1) & 3];
    const direction = DIRECTIONS[(kind >> 3) & 3];
    if (conn === undefined || verdict === undefined) throw new Error('malformed L7 flow batch');
    const rec: WireRecord = {
      time: r[i] as number,
      type: TYPES[kind & 1]!,
      verdict,
      conn,
      srcIdentity: r[i + 3] as number,
      dstIdentity: r[i + 4] as number,
      method: r[i + 5] as string,
      url: r[i + 6] as string,
      protocol: r[i + 7] as string,
      code: r[i + 8] as number,
      rawHeaders: r[i + 9] as string[],
      latencyNs: r[i + 10] as number,
    };
    if (direction) rec.direction = direction;
    out.push(rec);
  }
  return out;
}

/** The records of a batch, in order, in their full shape (header names lower-cased). Throws on a malformed batch. */
export function decodeFlows(b: FlowBatch): HttpFlowRecord[] {
  return decodeRecords(b).map(({ rawHeaders: raw, ...rest }) => {
    const headers: { key: string; value: string }[] = [];
    for (let h = 0; h + 1 < raw.length; h += 2) headers.push({ key: raw[h]!.toLowerCase(), value: raw[h + 1]! });
    return { ...rest, headers };
  });
}

/** The full record of a raw one (for an engine's onFlow sink in the same process). */
export function toRecord(f: RawFlow): HttpFlowRecord {
  const b = new FlowBatcher();
  b.add(f);
  return decodeFlows(b.take())[0]!;
}
