// The cost of an L7 flow record on the proxy -> agent IPC, in one process, no datapath: the full records cloned as
// objects (the encoding before flow-wire.ts) vs the compact batches, serialized as the IPC's 'advanced'
// serialization does (v8.serialize) and decoded on the agent side. Medians of the rounds, interleaved.
//   node dist/bench/l7-flows.js [--rounds 5] [--batches 3000] [--per 64]
import v8 from 'node:v8';
import { parseArgs } from 'node:util';
import { FlowBatcher, decodeFlows, type RawFlow } from '../src/proxy/flow-wire.js';
import type { HttpFlowRecord } from '../src/proxy/types.js';
import { median } from './stats.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '5' }, batches: { type: 'string', default: '3000' }, per: { type: 'string', default: '64' } } });
const rounds = Number(values.rounds);
const batches = Number(values.batches);
const per = Number(values.per);

const conn = { srcIp: '172.20.0.5', srcPort: 40000, dstIp: '172.20.1.3', dstPort: 80 };
const rawHeaders = ['Host', '172.20.1.3', 'Connection', 'keep-alive'];
const raw = (i: number): RawFlow => ({
  time: Date.now(),
  type: i & 1 ? 'RESPONSE' : 'REQUEST',
  verdict: 'FORWARDED',
  conn,
  direction: 'INGRESS',
  srcIdentity: 35238,
  dstIdentity: 23126,
  method: 'GET',
  url: 'http://172.20.1.3/public',
  protocol: 'HTTP/1.1',
  code: i & 1 ? 200 : 0,
  rawHeaders,
  latencyNs: 12345,
});

type Way = () => [Buffer, () => unknown];
const ways: Record<string, Way> = {
  objects: () => {
    const flows: HttpFlowRecord[] = [];
    for (let i = 0; i < per; i++) {
      const f = raw(i);
      const headers: { key: string; value: string }[] = [];
      for (let h = 0; h + 1 < f.rawHeaders.length; h += 2) headers.push({ key: f.rawHeaders[h]!.toLowerCase(), value: f.rawHeaders[h + 1]! });
      flows.push({ time: new Date(), type: f.type, verdict: f.verdict, conn: f.conn, direction: 'INGRESS', srcIdentity: f.srcIdentity, dstIdentity: f.dstIdentity, method: f.method, url: f.url, protocol: f.protocol, code: f.code, headers, latencyNs: f.latencyNs });
    }
    const b = v8.serialize({ type: 'flows', flows });
    return [b, () => v8.deserialize(b)];
  },
  batches: () => {
    const fb = new FlowBatcher();
    for (let i = 0; i < per; i++) fb.add(raw(i));
    const b = v8.serialize({ type: 'flows', batch: fb.take() });
    return [b, () => decodeFlows((v8.deserialize(b) as { batch: Parameters<typeof decodeFlows>[0] }).batch)];
  },
};

const res: Record<string, { proxy: number[]; agent: number[]; bytes: number }> = {};
for (let round = 1; round <= rounds; round++) {
  for (const [name, way] of Object.entries(ways)) {
    const r = (res[name] ??= { proxy: [], agent: [], bytes: 0 });
    let t = process.hrtime.bigint();
    const decode: (() => unknown)[] = [];
    for (let k = 0; k < batches; k++) {
      const [b, d] = way();
      r.bytes = b.length / per;
      decode.push(d);
    }
    r.proxy.push(Number(process.hrtime.bigint() - t) / (batches * per));
    t = process.hrtime.bigint();
    for (const d of decode) d();
    r.agent.push(Number(process.hrtime.bigint() - t) / (batches * per));
  }
}
const o = res['objects']!;
const n = res['batches']!;
console.log(`## L7 flow records over the proxy IPC (one process, medians of ${rounds} round(s), ${batches} messages of ${per} records)`);
console.log('| per record | record objects (before) | compact batches | batches / objects |');
console.log('|---|---:|---:|---:|');
console.log(`| proxy side: build + serialize, ns | ${median(o.proxy).toFixed(0)} | ${median(n.proxy).toFixed(0)} | ${(median(n.proxy) / median(o.proxy)).toFixed(2)}× |`);
console.log(`| agent side: deserialize + decode, ns | ${median(o.agent).toFixed(0)} | ${median(n.agent).toFixed(0)} | ${(median(n.agent) / median(o.agent)).toFixed(2)}× |`);
console.log(`| bytes on the IPC | ${o.bytes.toFixed(0)} | ${n.bytes.toFixed(0)} | ${(n.bytes / o.bytes).toFixed(2)}× |`);
