import { test } from 'node:test';
import assert from 'node:assert/strict';
import type grpc from '@grpc/grpc-js';
import { flowFromProto, flowToProto, observerService } from './codec.js';
import { compileFilters, FilterBuilder, urlPath } from './filter.js';
import { compactLine, flowTypeText, jsonLine } from './format.js';
import { httpSummary, l7Flow, MAX_FLOW_HEADERS, REDACTED_VALUE, type HttpAccessRecord } from './l7.js';
import { fakeContext } from './testing.js';

const ctx = fakeContext();
const T = Date.UTC(2025, 7, 6, 6, 50, 26, 228);
const conn = { srcIp: '172.20.2.179', srcPort: 43210, dstIp: '172.20.2.71', dstPort: 80 };
const base = { conn, srcIdentity: 47080, dstIdentity: 47081, method: 'GET', url: 'http://server/public?x=1', protocol: 'HTTP/1.1', direction: 'INGRESS' as const };
const request: HttpAccessRecord = { ...base, time: T, type: 'REQUEST', verdict: 'FORWARDED', code: 0, latencyNs: 0, headers: [{ key: 'Host', value: 'server' }, { key: 'Authorization', value: 'secret' }] };
const response: HttpAccessRecord = { ...base, time: T + 5, type: 'RESPONSE', verdict: 'FORWARDED', code: 200, latencyNs: 5_300_000, headers: [{ key: 'content-length', value: '2' }] };
const denied: HttpAccessRecord = { ...request, url: 'http://server/private', verdict: 'DROPPED' };
const denied403: HttpAccessRecord = { ...response, url: 'http://server/private', verdict: 'DROPPED', code: 403, latencyNs: 120_000 };

test('l7Flow(): a request is an L7 flow client → server with Hubble\'s l7.http fields and identities', () => {
  const f = l7Flow(request, ctx);
  assert.equal(f.Type, 'L7');
  assert.deepEqual(f.event_type, { type: 129 });
  assert.equal(f.verdict, 'FORWARDED');
  assert.equal(f.is_reply, false);
  assert.equal(f.traffic_direction, 'INGRESS');
  assert.deepEqual(f.IP, { source: '172.20.2.179', destination: '172.20.2.71', ipVersion: 'IPv4' });
  assert.deepEqual(f.l4, { TCP: { source_port: 43210, destination_port: 80 } });
  assert.equal(f.source?.pod_name, 'curl-pod');
  assert.equal(f.source?.identity, 47080);
  assert.equal(f.destination?.pod_name, 'netshoot-pod');
  assert.equal(f.destination?.identity, 47081);
  assert.deepEqual(f.l7, {
    type: 'REQUEST',
    http: { method: 'GET', url: 'http://server/public?x=1', protocol: 'HTTP/1.1', headers: [{ key: 'host', value: 'server' }, { key: 'authorization', value: REDACTED_VALUE }] },
  });
  assert.equal(f.Summary, 'HTTP/1.1 GET http://server/public?x=1');
  assert.equal(f.time, '2025-08-06T06:50:26.228Z');
});

test('l7Flow(): a response goes server → client, is a reply and carries code and latency', () => {
  const f = l7Flow(response, ctx);
  assert.equal(f.is_reply, true);
  assert.equal(f.IP?.source, '172.20.2.71');
  assert.equal(f.source?.identity, 47081);
  assert.deepEqual(f.l4, { TCP: { source_port: 80, destination_port: 43210 } });
  assert.equal(f.l7?.type, 'RESPONSE');
  assert.equal(f.l7?.latency_ns, 5_300_000);
  assert.equal(f.l7?.http?.code, 200);
  assert.equal(f.Summary, 'HTTP/1.1 200 5ms (GET http://server/public?x=1)');
});

test('headers are capped and credentials never leave the proxy', () => {
  const many = Array.from({ length: 50 }, (_, i) => ({ key: `X-H${i}`, value: String(i) }));
  const f = l7Flow({ ...request, headers: [...many, { key: 'cookie', value: 'a=b' }] }, ctx);
  assert.equal(f.l7?.http?.headers?.length, MAX_FLOW_HEADERS);
  const c = l7Flow({ ...request, headers: [{ key: 'Cookie', value: 'a=b' }, { key: 'set-cookie', value: 'x' }] }, ctx);
  assert.deepEqual(c.l7?.http?.headers?.map((h) => h.value), [REDACTED_VALUE, REDACTED_VALUE]);
});

test('compact output reads like hubble observe for HTTP flows', () => {
  assert.equal(
    compactLine(l7Flow(request, ctx), { utc: true }),
    'Aug  6 06:50:26.228: default/curl-pod:43210 (ID:47080) -> default/netshoot-pod:80 (ID:47081) http-request FORWARDED (HTTP/1.1 GET http://server/public?x=1)',
  );
  assert.equal(
    compactLine(l7Flow(response, ctx), { utc: true }),
    'Aug  6 06:50:26.233: default/curl-pod:43210 (ID:47080) <- default/netshoot-pod:80 (ID:47081) http-response FORWARDED (HTTP/1.1 200 5ms (GET http://server/public?x=1))',
  );
  assert.equal(flowTypeText(l7Flow(denied, ctx)), 'http-request');
  assert.match(compactLine(l7Flow(denied, ctx), { utc: true }), / http-request DROPPED \(HTTP\/1\.1 GET http:\/\/server\/private\)$/);
  assert.equal(httpSummary({ ...denied403 }), 'HTTP/1.1 403 0ms (GET http://server/private)');
  // protojson prints the uint64 latency as a string, and l7 after the endpoints.
  const j = JSON.parse(jsonLine(l7Flow(response, ctx))) as { flow: Record<string, unknown> & { l7: { latency_ns: unknown } } };
  assert.equal(j.flow.l7.latency_ns, '5300000');
  const keys = Object.keys(j.flow);
  assert.ok(keys.indexOf('l7') > keys.indexOf('destination') && keys.indexOf('l7') < keys.indexOf('event_type'));
});

test('an L7 flow survives the real protobuf encoding unchanged', () => {
  const m = observerService()['GetFlows'] as grpc.MethodDefinition<unknown, unknown>;
  for (const r of [request, response, denied403]) {
    const f = l7Flow(r, ctx);
    const back = flowFromProto((m.responseDeserialize(m.responseSerialize({ flow: flowToProto(f) })) as Record<string, Record<string, unknown>>)['flow']!);
    assert.deepEqual(back, f);
  }
});

function select(flags: Array<[string, string]>): string[] {
  const b = new FilterBuilder();
  for (const [k, v] of flags) b.apply(k, v);
  const { whitelist, blacklist } = b.build();
  const pred = compileFilters(whitelist, blacklist);
  const named: Array<[string, HttpAccessRecord]> = [['request', request], ['response', response], ['denied', denied], ['denied403', denied403]];
  return named.filter(([, r]) => pred(l7Flow(r, ctx))).map(([n]) => n);
}

test('--http-status takes codes and prefixes, as Hubble (only responses have one)', () => {
  assert.deepEqual(select([['http-status', '200']]), ['response']);
  assert.deepEqual(select([['http-status', '4+']]), ['denied403']);
  assert.deepEqual(select([['http-status', '40+']]), ['denied403']);
  assert.deepEqual(select([['http-status', '5+']]), []);
  assert.deepEqual(select([['http-status', '2+'], ['http-status', '403']]), ['response', 'denied403']);
  for (const bad of ['2', '2000', 'abc', '4++', '+']) assert.throws(() => select([['http-status', bad]]), { code: 'TENDRIL_ERR_OBSERVE_INVALID' });
});

test('--http-method (any case) and --http-path (regex over the URL path, query left out)', () => {
  assert.deepEqual(select([['http-method', 'get']]), ['request', 'response', 'denied', 'denied403']);
  assert.deepEqual(select([['http-method', 'POST']]), []);
  assert.deepEqual(select([['http-path', '^/private$']]), ['denied', 'denied403']);
  assert.deepEqual(select([['http-path', 'pub']]), ['request', 'response']);
  assert.deepEqual(select([['http-path', 'x=1']]), []);
  assert.deepEqual(select([['http-path', '/private'], ['verdict', 'DROPPED'], ['type', 'l7']]), ['denied', 'denied403']);
  assert.throws(() => select([['http-path', '(']]), { code: 'TENDRIL_ERR_OBSERVE_INVALID' });
  assert.equal(urlPath('http://h:80/a/b?q=1#f'), '/a/b');
  assert.equal(urlPath('/a?q'), '/a');
  assert.equal(urlPath('http://h'), '/');
});

test('--type l7 and --protocol http select L7 flows; HTTP filters never match L3/L4 flows', () => {
  assert.deepEqual(select([['type', 'l7']]), ['request', 'response', 'denied', 'denied403']);
  assert.deepEqual(select([['type', 'trace']]), []);
  assert.deepEqual(select([['protocol', 'http']]), ['request', 'response', 'denied', 'denied403']);
  assert.deepEqual(select([['protocol', 'tcp']]), ['request', 'response', 'denied', 'denied403']);
  const { l7: _l7, ...rest } = l7Flow(request, ctx);
  const l34 = { ...rest, Type: 'L3_L4' as const, event_type: { type: 4 } };
  for (const f of [{ http_method: ['GET'] }, { http_path: ['.*'] }, { http_status_code: ['2+'] }, { protocol: ['http'] }]) assert.equal(compileFilters([f])(l34), false);
});
