// L7 (HTTP) rules of TendrilNetworkPolicy: validation, merge across policies, L4 cancelling L7, and matching.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PolicyError } from './errors.js';
import { HttpMatcher, type HttpRequestView } from './http.js';
import { parsePolicyObject } from './parse.js';
import { Scenario } from './testing.js';
import type { HttpRule, Policy } from './types.js';

function tnp(name: string, spec: unknown, namespace = 'x'): Policy {
  return parsePolicyObject({ apiVersion: 'tendril.io/v2', kind: 'TendrilNetworkPolicy', metadata: { name, namespace }, spec });
}

const A = { matchLabels: { pod: 'a' } };
const B = { matchLabels: { pod: 'b' } };
const http = (...rules: unknown[]): unknown => [{ ports: [{ port: '80', protocol: 'TCP' }], rules: { http: rules } }];
const rule = (r: Partial<HttpRule>): HttpRule => ({ method: null, path: null, host: null, headers: [], ...r });

function rejects(spec: unknown, field: string, reason: RegExp | string): void {
  try {
    tnp('p', spec);
  } catch (err) {
    assert.ok(err instanceof PolicyError, String(err));
    assert.equal(err.code, 'TENDRIL_ERR_POLICY_INVALID');
    assert.equal(err.field, field, err.message);
    if (typeof reason === 'string') assert.equal(err.reason, reason, err.message);
    else assert.match(err.reason, reason, err.message);
    return;
  }
  assert.fail(`accepted ${JSON.stringify(spec)}`);
}

test('parse: toPorts[].rules.http becomes an L7 rule of its ports, the other toPorts stay L4', () => {
  const p = tnp('p', {
    endpointSelector: A,
    ingress: [
      {
        fromEndpoints: [B],
        toPorts: [
          { ports: [{ port: '8080' }] },
          { ports: [{ port: '80' }], rules: { http: [{ method: 'GET', path: '/public.*', headers: ['X-Env: prod', 'x-token'] }, { method: 'GET', path: '/public.*', headers: ['X-Token', 'X-Env:prod'] }] } },
        ],
      },
    ],
  });
  const rules = p.specs[0]!.rules;
  assert.equal(rules.length, 2);
  assert.deepEqual(rules[0]!.ports, [{ kind: 'range', protocol: 'ANY', from: 8080, to: 8080 }]);
  assert.equal(rules[0]!.http, undefined);
  // ANY means TCP under HTTP; the two spellings of one rule are one rule.
  assert.deepEqual(rules[1]!.ports, [{ kind: 'range', protocol: 'TCP', from: 80, to: 80 }]);
  assert.deepEqual(rules[1]!.http, [rule({ method: 'GET', path: '/public.*', headers: [{ name: 'x-env', value: 'prod' }, { name: 'x-token', value: null }] })]);
  assert.deepEqual(rules[1]!.peers, rules[0]!.peers);
  // Egress too, and a port-only L7 rule applies to every peer.
  const e = tnp('e', { endpointSelector: A, egress: [{ toPorts: http({ path: '/x' }) }] });
  assert.equal(e.specs[0]!.rules.length, 1);
  assert.deepEqual(e.specs[0]!.rules[0]!.peers, [{ type: 'any' }]);
  assert.equal(e.specs[0]!.rules[0]!.direction, 'egress');
});

test('parse: invalid HTTP rules are coded errors naming the field', () => {
  const f = 'spec.ingress[0].toPorts[0]';
  rejects({ endpointSelector: A, ingress: [{ toPorts: http({ path: '/a(' }) }] }, `${f}.rules.http[0].path`, /^"\/a\(" is not a valid regular expression: /);
  rejects({ endpointSelector: A, ingress: [{ toPorts: http({ method: '[GET' }) }] }, `${f}.rules.http[0].method`, /is not a valid regular expression/);
  rejects({ endpointSelector: A, ingress: [{ toPorts: http({ path: '/(?!admin).*' }) }] }, `${f}.rules.http[0].path`, /uses lookaround/);
  rejects({ endpointSelector: A, ingress: [{ toPorts: http({ path: '/(a)\\1' }) }] }, `${f}.rules.http[0].path`, /uses a backreference/);
  rejects({ endpointSelector: A, ingress: [{ toPorts: http({ verb: 'GET' }) }] }, `${f}.rules.http[0].verb`, 'unknown field (one of method, path, host, headers)');
  rejects({ endpointSelector: A, ingress: [{ toPorts: http({ headerMatches: [] }) }] }, `${f}.rules.http[0].headerMatches`, 'is not supported by Tendril');
  rejects({ endpointSelector: A, ingress: [{ toPorts: http({ path: 7 }) }] }, `${f}.rules.http[0].path`, /must be a string/);
  rejects({ endpointSelector: A, ingress: [{ toPorts: http({ headers: ['bad header: x'] }) }] }, `${f}.rules.http[0].headers[0]`, '"bad header" is not a valid header name');
  rejects({ endpointSelector: A, ingress: [{ toPorts: http({ headers: 'X-A' }) }] }, `${f}.rules.http[0].headers`, /must be a list/);
  rejects({ endpointSelector: A, ingress: [{ toPorts: [{ ports: [{ port: '80' }], rules: { http: [] } }] }] }, `${f}.rules.http`, /^required \(at least one rule/);
  rejects({ endpointSelector: A, ingress: [{ toPorts: [{ ports: [{ port: '80' }], rules: {} }] }] }, `${f}.rules.http`, /^required/);
  rejects({ endpointSelector: A, ingress: [{ toPorts: [{ ports: [{ port: '80' }], rules: { htp: [] } }] }] }, `${f}.rules.htp`, /unknown field \(did you mean "http"\?\)/);
  rejects({ endpointSelector: A, ingress: [{ toPorts: [{ ports: [{ port: '53' }], rules: { dns: [] } }] }] }, `${f}.rules.dns`, 'is not supported by Tendril');
  rejects({ endpointSelector: A, ingress: [{ toPorts: [{ ports: [{ port: '80', protocol: 'UDP' }], rules: { http: [{}] } }] }] }, `${f}.ports[0].protocol`, 'HTTP rules need TCP, got UDP');
  rejects({ endpointSelector: A, ingress: [{ toPorts: [{ ports: [{ port: '80', endPort: 90 }], rules: { http: [{}] } }] }] }, `${f}.ports[0].endPort`, 'HTTP rules need a single port, not a range');
  rejects({ endpointSelector: A, ingress: [{ toPorts: [{ ports: [{ port: '0' }], rules: { http: [{}] } }] }] }, `${f}.ports[0].port`, 'HTTP rules need a port (not 0 or absent)');
  rejects({ endpointSelector: A, ingressDeny: [{ toPorts: http({}) }] }, 'spec.ingressDeny[0].toPorts[0].rules', 'L7 rules cannot be used in a deny rule');
  rejects({ endpointSelector: A, ingress: [{ toPorts: http({}), icmps: [{ fields: [{ type: 8 }] }] }] }, 'spec.ingress[0].icmps', /cannot be used with toPorts/);
});

test('compile: an L7 rule marks its allow entries with the HTTP rules; other ports stay L4', () => {
  const s = new Scenario([tnp('l7', { endpointSelector: A, ingress: [{ fromEndpoints: [B], toPorts: http({ method: 'GET', path: '/public' }) }] })]);
  assert.deepEqual(s.l7('x/b', 'x/a', 80).ingress, [rule({ method: 'GET', path: '/public' })]);
  assert.equal(s.l7('x/c', 'x/a', 80).ingress, 'drop', 'a peer the L3 rule does not allow is dropped in BPF');
  assert.equal(s.l7('x/b', 'x/a', 81).ingress, 'drop');
  const entry = s.policy('x/a').entries.find((e) => e.http !== undefined);
  assert.deepEqual(entry?.derivedFrom, ['TendrilNetworkPolicy/x/l7']);
  // Policies without L7 compile exactly as before: no http field anywhere.
  const l4 = new Scenario([tnp('l4', { endpointSelector: A, ingress: [{ fromEndpoints: [B], toPorts: [{ ports: [{ port: '80' }] }] }] })]);
  assert.ok(l4.policy('x/a').entries.every((e) => !('http' in e)));
});

test('compile: rules of several policies for the same endpoint and port merge (any rule allows)', () => {
  const s = new Scenario([
    tnp('one', { endpointSelector: A, ingress: [{ fromEndpoints: [B], toPorts: http({ path: '/public' }) }] }),
    tnp('two', { endpointSelector: A, ingress: [{ fromEndpoints: [B], toPorts: http({ path: '/extra', method: 'POST' }) }] }),
  ]);
  assert.deepEqual(s.l7('x/b', 'x/a', 80).ingress, [rule({ path: '/extra', method: 'POST' }), rule({ path: '/public' })].sort((a, b) => (JSON.stringify([a.method, a.path]) < JSON.stringify([b.method, b.path]) ? -1 : 1)));
  const e = s.policy('x/a').entries.find((x) => x.http !== undefined)!;
  assert.deepEqual(e.derivedFrom, ['TendrilNetworkPolicy/x/one', 'TendrilNetworkPolicy/x/two']);
  // A wildcard-peer L7 rule merges into a specific peer's L7 rules on the same port (the datapath picks one entry).
  const w = new Scenario([
    tnp('any', { endpointSelector: A, ingress: [{ toPorts: http({ path: '/public' }) }] }),
    tnp('b', { endpointSelector: A, ingress: [{ fromEndpoints: [B], toPorts: http({ path: '/private' }) }] }),
  ]);
  assert.deepEqual(w.l7('x/b', 'x/a', 80).ingress, [rule({ path: '/private' }), rule({ path: '/public' })]);
  assert.deepEqual(w.l7('x/c', 'x/a', 80).ingress, [rule({ path: '/public' })]);
});

test('compile: an L4-only allow for the same peer and port makes the port unfiltered at L7', () => {
  const l7 = tnp('l7', { endpointSelector: A, ingress: [{ fromEndpoints: [B], toPorts: http({ path: '/public' }) }] });
  const same = new Scenario([l7, tnp('l4', { endpointSelector: A, ingress: [{ fromEndpoints: [B], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }] }] })]);
  assert.equal(same.l7('x/b', 'x/a', 80).ingress, 'allow');
  assert.ok(same.policy('x/a').entries.every((e) => e.http === undefined));
  // Wider L4 allows cancel too: every port of the peer, or port 80 from every peer.
  const allPorts = new Scenario([l7, tnp('l4', { endpointSelector: A, ingress: [{ fromEndpoints: [B] }] })]);
  assert.equal(allPorts.l7('x/b', 'x/a', 80).ingress, 'allow');
  const anyPeer = new Scenario([l7, tnp('l4', { endpointSelector: A, ingress: [{ toPorts: [{ ports: [{ port: '80' }] }] }] })]);
  assert.equal(anyPeer.l7('x/b', 'x/a', 80).ingress, 'allow');
  // An L4 allow for another peer leaves this peer filtered; a wildcard L7 rule with a specific L4 allow: only
  // that peer is unfiltered.
  const other = new Scenario([l7, tnp('l4', { endpointSelector: A, ingress: [{ fromEndpoints: [{ matchLabels: { pod: 'c' } }], toPorts: [{ ports: [{ port: '80' }] }] }] })]);
  assert.deepEqual(other.l7('x/b', 'x/a', 80).ingress, [rule({ path: '/public' })]);
  assert.equal(other.l7('x/c', 'x/a', 80).ingress, 'allow');
  const wild = new Scenario([
    tnp('any', { endpointSelector: A, ingress: [{ toPorts: http({ path: '/public' }) }] }),
    tnp('l4', { endpointSelector: A, ingress: [{ fromEndpoints: [B], toPorts: [{ ports: [{ port: '0', protocol: 'TCP' }] }] }] }),
  ]);
  assert.equal(wild.l7('x/b', 'x/a', 80).ingress, 'allow');
  assert.deepEqual(wild.l7('x/c', 'x/a', 80).ingress, [rule({ path: '/public' })]);
  // An L4 rule for another port does not cancel.
  const port81 = new Scenario([l7, tnp('l4', { endpointSelector: A, ingress: [{ fromEndpoints: [B], toPorts: [{ ports: [{ port: '81' }] }] }] })]);
  assert.deepEqual(port81.l7('x/b', 'x/a', 80).ingress, [rule({ path: '/public' })]);
  assert.equal(port81.l7('x/b', 'x/a', 81).ingress, 'allow');
});

test('compile: a deny still wins over an L7 allow; egress L7 rules land on the client', () => {
  const s = new Scenario([
    tnp('l7', { endpointSelector: A, ingress: [{ toPorts: http({ path: '/public' }) }] }),
    tnp('deny', { endpointSelector: A, ingressDeny: [{ fromEndpoints: [B], toPorts: [{ ports: [{ port: '80' }] }] }] }),
  ]);
  assert.equal(s.l7('x/b', 'x/a', 80).ingress, 'drop');
  assert.deepEqual(s.l7('x/c', 'x/a', 80).ingress, [rule({ path: '/public' })]);
  const e = new Scenario([tnp('eg', { endpointSelector: B, egress: [{ toEndpoints: [A], toPorts: http({ method: 'GET' }) }] })]);
  assert.deepEqual(e.l7('x/b', 'x/a', 80).egress, [rule({ method: 'GET' })]);
  assert.equal(e.l7('x/b', 'x/c', 80).egress, 'drop');
});

function req(method: string, path: string, headers: Record<string, string | string[]> = {}, host = 'web'): HttpRequestView {
  return { method, path, host, headers: new Map(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), Array.isArray(v) ? v : [v]])) };
}

test('HttpMatcher: whole-string regexes for method, path and host; headers by presence or exact value', () => {
  const m = new HttpMatcher([
    rule({ method: 'GET|HEAD', path: '/public(/.*)?' }),
    rule({ method: 'POST', path: '/api', headers: [{ name: 'x-token', value: null }, { name: 'x-env', value: 'prod' }] }),
    rule({ host: 'admin\\.example', path: '/admin' }),
  ]);
  assert.ok(m.match(req('GET', '/public')));
  assert.ok(m.match(req('HEAD', '/public/a/b')));
  assert.equal(m.match(req('GET', '/publicity')), undefined, 'whole-string: /public(/.*)? does not match /publicity');
  assert.equal(m.match(req('GET', '/x/public')), undefined);
  assert.equal(m.match(req('GETX', '/public')), undefined);
  assert.equal(m.match(req('get', '/public')), undefined, 'methods are case-sensitive');
  assert.equal(m.match(req('POST', '/api', { 'X-Token': 'a' })), undefined, 'every header must hold');
  assert.ok(m.match(req('POST', '/api', { 'X-Token': '', 'X-Env': 'prod' })));
  assert.ok(m.match(req('POST', '/api', { 'X-Token': 'a', 'X-Env': ['dev', 'prod'] })), 'a repeated header holds if one value does');
  assert.equal(m.match(req('POST', '/api', { 'X-Token': 'a', 'X-Env': 'production' })), undefined);
  assert.ok(m.match(req('PUT', '/admin', {}, 'ADMIN.example')), 'host names are case-insensitive');
  assert.equal(m.match(req('PUT', '/admin', {}, 'adminXexample')), undefined);
  assert.ok(new HttpMatcher([rule({})]).match(req('DELETE', '/anything')), '{} allows every request');
  assert.equal(new HttpMatcher([]).match(req('GET', '/')), undefined);
});
