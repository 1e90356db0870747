// parsePolicies / parsePolicyObject: document formats, normalization and strict validation messages.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PolicyError } from './errors.js';
import { parsePolicies, parsePolicyObject, policyKey } from './parse.js';

const NP = (spec: unknown, metadata: unknown = { name: 'deny-all', namespace: 'x' }): unknown => ({
  apiVersion: 'networking.k8s.io/v1',
  kind: 'NetworkPolicy',
  metadata,
  spec,
});
const TNP = (spec: unknown, metadata: unknown = { name: 'p', namespace: 'x' }): unknown => ({
  apiVersion: 'tendril.io/v2',
  kind: 'TendrilNetworkPolicy',
  metadata,
  spec,
});

/** Asserts that parsing obj fails on `field` with a reason matching `reason`. */
function rejects(obj: unknown, field: string, reason: RegExp | string): PolicyError {
  try {
    parsePolicyObject(obj);
  } catch (err) {
    assert.ok(err instanceof PolicyError, `not a PolicyError: ${String(err)}`);
    assert.equal(err.code, 'TENDRIL_ERR_POLICY_INVALID');
    assert.equal(err.field, field, err.message);
    if (typeof reason === 'string') assert.equal(err.reason, reason, err.message);
    else assert.match(err.reason, reason, err.message);
    assert.ok(err.message.endsWith(`${field === '' ? '' : `${field}: `}${err.reason}`), err.message);
    return err;
  }
  assert.fail(`accepted ${JSON.stringify(obj)}`);
}

test('parsePolicyObject() message names kind, namespace/name, field and reason', () => {
  const err = rejects(NP({ podSelector: {}, ingress: [{ ports: [{ port: 1 }, { port: 80, endPort: 79 }] }] }), 'spec.ingress[0].ports[1].endPort', '79 is lower than port 80');
  assert.equal(err.message, 'Invalid NetworkPolicy "x/deny-all": spec.ingress[0].ports[1].endPort: 79 is lower than port 80');
  assert.equal(err.doc, undefined);
});

test('parsePolicyObject() normalizes a NetworkPolicy and keeps the source', () => {
  const src = NP(
    {
      podSelector: { matchLabels: { app: 'web' } },
      ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'a' } }, podSelector: {} }, { ipBlock: { cidr: '10.1.2.3/8', except: ['10.1.0.0/16'] } }], ports: [{ port: 'http' }, { protocol: 'UDP', port: 53 }] }],
    },
    { name: 'web', namespace: 'prod', labels: { owner: 'me' } },
  );
  const p = parsePolicyObject(src);
  assert.equal(p.source, src);
  assert.equal(policyKey(p), 'NetworkPolicy/prod/web');
  assert.deepEqual(p.specs, [
    {
      endpointSelector: { requirements: [{ source: 'k8s', key: 'app', operator: 'In', values: ['web'] }] },
      enforces: { ingress: true, egress: false },
      defaultDeny: { ingress: true, egress: false },
      rules: [
        {
          direction: 'ingress',
          deny: false,
          peers: [
            {
              type: 'endpoints',
              selector: { requirements: [] },
              namespace: null,
              namespaceSelector: { requirements: [{ source: 'k8s', key: 'io.cilium.k8s.namespace.labels.team', operator: 'In', values: ['a'] }] },
              includeReserved: false,
            },
            { type: 'ipBlock', cidr: '10.0.0.0/8', except: ['10.1.0.0/16'] },
          ],
          ports: [
            { kind: 'named', protocol: 'TCP', name: 'http' },
            { kind: 'range', protocol: 'UDP', from: 53, to: 53 },
          ],
        },
      ],
    },
  ]);
});

test('metadata.namespace defaults to "default"', () => {
  const p = parsePolicyObject(NP({ podSelector: {} }, { name: 'n' }));
  assert.equal(p.namespace, 'default');
  assert.equal(policyKey(p), 'NetworkPolicy/default/n');
});

test('document-level errors: kind, apiVersion, metadata.name, unknown top-level fields', () => {
  rejects({ ...(NP({ podSelector: {} }) as object), kind: 'NetworkPolicyy' }, 'kind', '"NetworkPolicyy" is not one of NetworkPolicy, TendrilNetworkPolicy, TendrilClusterwideNetworkPolicy');
  rejects({ ...(NP({ podSelector: {} }) as object), apiVersion: 'networking.k8s.io/v1beta1' }, 'apiVersion', '"networking.k8s.io/v1beta1" is not networking.k8s.io/v1');
  rejects({ ...(TNP({ endpointSelector: {} }) as object), apiVersion: 'cilium.io/v2' }, 'apiVersion', '"cilium.io/v2" is not tendril.io/v2');
  const e = rejects(NP({ podSelector: {} }, { namespace: 'x' }), 'metadata.name', 'required');
  assert.equal(e.message, 'Invalid NetworkPolicy: metadata.name: required');
  rejects(NP({ podSelector: {} }, { name: 'Bad_Name' }), 'metadata.name', /not a valid name/);
  rejects(NP({ podSelector: {} }, { name: 'n', namespace: 'a.b' }), 'metadata.namespace', /not a valid name/);
  rejects(NP({ podSelector: {} }, { name: 'n', nmespace: 'x' }), 'metadata.nmespace', 'unknown field (did you mean "namespace"?)');
  rejects({ ...(NP({ podSelector: {} }) as object), extra: 1 }, 'extra', 'unknown field');
  rejects(NP(undefined), 'spec', 'required');
  rejects('just a string', '', 'must be an object, got the string "just a string"');
});

test('a typo never widens a policy: podSelecter is an unknown field, not "select everything"', () => {
  const e = rejects(NP({ podSelecter: { matchLabels: { app: 'db' } }, ingress: [] }), 'spec.podSelecter', 'unknown field (did you mean "podSelector"?)');
  assert.match(e.message, /^Invalid NetworkPolicy "x\/deny-all": spec\.podSelecter: unknown field/);
  rejects(NP({ podSelector: {}, ingress: [{ form: [] }] }), 'spec.ingress[0].form', 'unknown field (did you mean "from"?)');
  rejects(NP({ podSelector: { matchLabel: {} } }), 'spec.podSelector.matchLabel', 'unknown field (did you mean "matchLabels"?)');
  rejects(NP({ ingress: [] }), 'spec.podSelector', 'required (use {} to select every pod of the namespace)');
});

test('selectors: label keys and values, operators and their values', () => {
  const peer = (p: unknown): unknown => NP({ podSelector: {}, ingress: [{ from: [p] }] });
  rejects(NP({ podSelector: { matchLabels: { 'bad key': 'v' } } }), 'spec.podSelector.matchLabels.bad key', /not a valid label key/);
  rejects(NP({ podSelector: { matchLabels: { 'Bad_Prefix/app': 'v' } } }), 'spec.podSelector.matchLabels.Bad_Prefix/app', /invalid prefix/);
  rejects(NP({ podSelector: { matchLabels: { 'k8s:app': 'v' } } }), 'spec.podSelector.matchLabels.k8s:app', /not a valid label key/);
  rejects(NP({ podSelector: { matchLabels: { app: 'no spaces' } } }), 'spec.podSelector.matchLabels.app', /not a valid label value/);
  rejects(NP({ podSelector: { matchLabels: { app: 5 } } }), 'spec.podSelector.matchLabels.app', 'must be a string, got the number 5');
  rejects(peer({ podSelector: { matchExpressions: [{ key: 'a', operator: 'Equals', values: ['b'] }] } }), 'spec.ingress[0].from[0].podSelector.matchExpressions[0].operator', '"Equals" is not one of In, NotIn, Exists, DoesNotExist');
  rejects(peer({ podSelector: { matchExpressions: [{ key: 'a', operator: 'In' }] } }), 'spec.ingress[0].from[0].podSelector.matchExpressions[0].values', 'required (at least one value) for operator In');
  rejects(peer({ namespaceSelector: { matchExpressions: [{ key: 'a', operator: 'NotIn', values: [] }] } }), 'spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values', 'required (at least one value) for operator NotIn');
  rejects(peer({ podSelector: { matchExpressions: [{ key: 'a', operator: 'Exists', values: ['x'] }] } }), 'spec.ingress[0].from[0].podSelector.matchExpressions[0].values', 'must be empty for operator Exists');
  rejects(peer({ podSelector: { matchExpressions: [{ key: 'a', operator: 'DoesNotExist', values: ['x'] }] } }), 'spec.ingress[0].from[0].podSelector.matchExpressions[0].values', 'must be empty for operator DoesNotExist');
  // Tendril keys may carry a source; unknown sources are rejected.
  assert.ok(parsePolicyObject(TNP({ endpointSelector: { matchLabels: { 'k8s:app': 'a', 'any:b': 'c', d: 'e', 'reserved:host': '' } } })));
  rejects(TNP({ endpointSelector: { matchLabels: { 'kates:app': 'a' } } }), 'spec.endpointSelector.matchLabels.kates:app', /label source "kates"/);
});

test('peers: exactly one kind of peer, CIDR syntax, except inside cidr', () => {
  const from = (p: unknown): unknown => NP({ podSelector: {}, ingress: [{ from: [p] }] });
  rejects(from({}), 'spec.ingress[0].from[0]', 'must specify podSelector, namespaceSelector or ipBlock');
  rejects(from({ ipBlock: { cidr: '10.0.0.0/8' }, podSelector: {} }), 'spec.ingress[0].from[0]', 'ipBlock cannot be combined with podSelector or namespaceSelector in one peer');
  rejects(from({ ipBlock: { cidr: '10.0.0.0/33' } }), 'spec.ingress[0].from[0].ipBlock.cidr', '"10.0.0.0/33" is not a valid IPv4 CIDR');
  rejects(from({ ipBlock: { cidr: '10.0.0.1' } }), 'spec.ingress[0].from[0].ipBlock.cidr', '"10.0.0.1" is not a valid IPv4 CIDR');
  rejects(from({ ipBlock: { cidr: 'fd00::/8' } }), 'spec.ingress[0].from[0].ipBlock.cidr', '"fd00::/8": IPv6 is not supported');
  rejects(from({ ipBlock: { cidr: '10.0.0.0/8', except: ['11.0.0.0/16'] } }), 'spec.ingress[0].from[0].ipBlock.except[0]', '11.0.0.0/16 is not inside cidr 10.0.0.0/8');
  rejects(from({ ipBlock: { cidr: '10.0.0.0/8', except: ['10.0.0.0/8'] } }), 'spec.ingress[0].from[0].ipBlock.except[0]', '10.0.0.0/8 is not inside cidr 10.0.0.0/8');
  rejects(from({ ipBlock: { cidr: '10.0.0.0/8', excpet: [] } }), 'spec.ingress[0].from[0].ipBlock.excpet', 'unknown field (did you mean "except"?)');
  rejects(TNP({ endpointSelector: {}, egress: [{ toCIDRSet: [{ cidr: '10.0.0.0/8', except: ['9.0.0.0/16'] }] }] }), 'spec.egress[0].toCIDRSet[0].except[0]', '9.0.0.0/16 is not inside cidr 10.0.0.0/8');
  rejects(TNP({ endpointSelector: {}, egress: [{ toCIDR: ['300.0.0.0/8'] }] }), 'spec.egress[0].toCIDR[0]', '"300.0.0.0/8" is not a valid IPv4 CIDR');
});

test('ports: range, endPort rules, named ports, protocols', () => {
  const port = (p: unknown): unknown => NP({ podSelector: {}, ingress: [{ ports: [p] }] });
  const f = 'spec.ingress[0].ports[0]';
  rejects(port({ port: 0 }), `${f}.port`, '0 is out of range (1-65535)');
  rejects(port({ port: 65536 }), `${f}.port`, '65536 is out of range (1-65535)');
  rejects(port({ port: 80.5 }), `${f}.port`, '80.5 is out of range (1-65535)');
  rejects(port({ endPort: 90 }), `${f}.endPort`, 'requires a numeric port');
  rejects(port({ port: 80, endPort: 70000 }), `${f}.endPort`, '70000 is out of range (1-65535)');
  rejects(port({ port: 'http', endPort: 90 }), `${f}.endPort`, 'cannot be used with the named port "http"');
  rejects(port({ port: '80' }), `${f}.port`, /is not a valid port number or port name/);
  rejects(port({ port: 'this-name-is-too-long' }), `${f}.port`, /is not a valid port number or port name/);
  rejects(port({ port: true }), `${f}.port`, 'must be a port number or name, got the boolean true');
  rejects(port({ port: 80, protocol: 'ICMP' }), `${f}.protocol`, '"ICMP" is not one of TCP, UDP, SCTP');
  rejects(port({ port: 80, protocol: 'ANY' }), `${f}.protocol`, '"ANY" is not one of TCP, UDP, SCTP');
  rejects(port({ port: 80, protocol: 'tcp' }), `${f}.protocol`, '"tcp" is not one of TCP, UDP, SCTP');
  const tport = (p: unknown): unknown => TNP({ endpointSelector: {}, ingress: [{ toPorts: [{ ports: [p] }] }] });
  const tf = 'spec.ingress[0].toPorts[0].ports[0]';
  rejects(tport({ port: '80', protocol: 'ICMP' }), `${tf}.protocol`, '"ICMP" is not one of TCP, UDP, SCTP, ANY');
  rejects(tport({ port: '80', endPort: 79 }), `${tf}.endPort`, '79 is lower than port 80');
  rejects(tport({ port: '0', endPort: 79 }), `${tf}.endPort`, 'requires a non-zero port');
  rejects(tport({ port: '99999' }), `${tf}.port`, '99999 is out of range (0-65535)');
  rejects(TNP({ endpointSelector: {}, ingress: [{ toPorts: [{ ports: [] }] }] }), 'spec.ingress[0].toPorts[0].ports', 'required (at least one port)');
  const ok = parsePolicyObject(tport({ port: '8080', endPort: 8090 }));
  assert.deepEqual(ok.specs[0]!.rules[0]!.ports, [{ kind: 'range', protocol: 'ANY', from: 8080, to: 8090 }]);
});

test('policyTypes, entities and unsupported Cilium features are rejected with a reason', () => {
  rejects(NP({ podSelector: {}, policyTypes: ['ingress'] }), 'spec.policyTypes[0]', '"ingress" is not one of Ingress, Egress');
  rejects(NP({ podSelector: {}, policyTypes: ['Ingress', 'Ingress'] }), 'spec.policyTypes[1]', '"Ingress" is listed twice');
  rejects(NP({ podSelector: {}, policyTypes: 'Ingress' }), 'spec.policyTypes', 'must be a list, got the string "Ingress"');
  rejects(TNP({ endpointSelector: {}, ingress: [{ fromEntities: ['wrld'] }] }), 'spec.ingress[0].fromEntities[0]', /^unknown entity "wrld"/);
  rejects(TNP({ endpointSelector: {}, egress: [{ toFQDNs: [{ matchName: 'a.b' }] }] }), 'spec.egress[0].toFQDNs', 'is not supported by Tendril');
  rejects(TNP({ endpointSelector: {}, ingress: [{ toPorts: [{ ports: [{ port: '80' }], rules: { kafka: [{}] } }] }] }), 'spec.ingress[0].toPorts[0].rules.kafka', 'is not supported by Tendril');
  rejects(TNP({ endpointSelector: {}, ingress: [{ fromEndpoints: [{}], toEndpoints: [{}] }] }), 'spec.ingress[0].toEndpoints', /unknown field/);
  rejects(TNP({ endpointSelector: {}, enableDefaultDeny: { ingress: 'no' } }), 'spec.enableDefaultDeny.ingress', 'must be true or false, got the string "no"');
  rejects(TNP({ ingress: [{}] }), 'spec.endpointSelector', 'required (use {} to select every endpoint of the namespace)');
  rejects(TNP(undefined), 'spec', 'required (spec or a non-empty specs)');
  rejects(TNP({ endpointSelector: {}, nodeSelector: {} }), 'spec.nodeSelector', 'is not supported by Tendril');
});

test('TendrilNetworkPolicy accepts spec and specs together, description and labels', () => {
  const p = parsePolicyObject({
    ...(TNP({ endpointSelector: {}, description: 'd', labels: [{ key: 'k', value: 'v', source: 'unspec' }], ingress: [{}] }) as object),
    specs: [{ endpointSelector: { matchLabels: { app: 'x' } }, egressDeny: [{ toEntities: ['world'] }] }],
  });
  assert.equal(p.specs.length, 2);
  assert.deepEqual(p.specs[1]!.enforces, { ingress: false, egress: true });
});

test('parsePolicies() reads YAML multi-document, JSON objects, JSON arrays and Lists', () => {
  const yaml = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a, namespace: x}
spec: {podSelector: {}}
---
apiVersion: tendril.io/v2
kind: TendrilNetworkPolicy
metadata: {name: a, namespace: x}
spec:
  endpointSelector: {}
  ingress:
  - fromEntities: [world]
---
`;
  const ps = parsePolicies(yaml, 'p.yaml');
  assert.deepEqual(ps.map(policyKey), ['NetworkPolicy/x/a', 'TendrilNetworkPolicy/x/a']);
  const json = JSON.stringify(NP({ podSelector: {} }));
  assert.equal(parsePolicies(json).length, 1);
  assert.equal(parsePolicies(`[${json}, ${JSON.stringify(NP({ podSelector: {} }, { name: 'b' }))}]`).length, 2);
  const list = JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [NP({ podSelector: {} }), NP({ podSelector: {} }, { name: 'c' })] });
  assert.deepEqual(parsePolicies(list).map((p) => p.name), ['deny-all', 'c']);
  assert.deepEqual(parsePolicies(''), []);
  assert.deepEqual(parsePolicies('---\n'), []);
});

test('parsePolicies() is all-or-nothing and names the failing document', () => {
  const good = 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a, namespace: x}\nspec: {podSelector: {}}\n';
  const bad = 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: b, namespace: x}\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/40}\n';
  assert.throws(
    () => parsePolicies(`${good}---\n${bad}`, 'policies.yaml'),
    (err: unknown) =>
      err instanceof PolicyError &&
      err.doc === 'policies.yaml document 2' &&
      err.field === 'spec.ingress[0].from[0].ipBlock.cidr' &&
      err.message === 'Invalid NetworkPolicy "x/b" (policies.yaml document 2): spec.ingress[0].from[0].ipBlock.cidr: "10.0.0.0/40" is not a valid IPv4 CIDR',
  );
  // A list item is named by its index.
  const list = JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [NP({ podSelector: {} }), NP({ podSelectr: {} })] });
  assert.throws(() => parsePolicies(list, 'l.json'), (err: unknown) => err instanceof PolicyError && err.doc === 'l.json document 1 items[1]');
  // The same policy twice.
  assert.throws(() => parsePolicies(`${good}---\n${good}`, 'd.yaml'), (err: unknown) => err instanceof PolicyError && /also defined in d.yaml document 1/.test(err.message));
  // YAML that does not parse.
  assert.throws(
    () => parsePolicies(`${good}---\nkind: [unclosed\n`, 's.yaml'),
    (err: unknown) => err instanceof PolicyError && err.doc === 's.yaml document 2' && err.message.startsWith('Invalid policy document (s.yaml document 2): cannot parse:'),
  );
  // Duplicate keys are a parse error, not a silent overwrite.
  assert.throws(() => parsePolicies('kind: NetworkPolicy\nkind: NetworkPolicy\n'), PolicyError);
});

test('icmps: type by number or name, code, family; refused with toPorts, for IPv6, out of range or unknown', () => {
  const ic = (fields: unknown, extra: Record<string, unknown> = {}): unknown => TNP({ endpointSelector: {}, ingress: [{ icmps: [{ fields }], ...extra }] });
  const ok = parsePolicyObject(ic([{ type: 8 }, { type: 'TimeExceeded', family: 'IPv4' }, { type: '3', code: 4 }]));
  assert.deepEqual(ok.specs[0]!.rules[0]!.ports, [
    { kind: 'icmp', type: 8, code: null },
    { kind: 'icmp', type: 11, code: null },
    { kind: 'icmp', type: 3, code: 4 },
  ]);
  assert.deepEqual(ok.specs[0]!.rules[0]!.peers, [{ type: 'any' }], 'icmps without a peer: every peer');
  const f = 'spec.ingress[0].icmps[0].fields[0]';
  rejects(ic([{ type: 256 }]), `${f}.type`, '256 is out of range (0-255)');
  rejects(ic([{ type: 'Ping' }]), `${f}.type`, /^unknown ICMP type "Ping"/);
  rejects(ic([{ type: 8, family: 'IPv6' }]), `${f}.family`, 'IPv6 is not supported');
  rejects(ic([{ type: 3, code: 300 }]), `${f}.code`, 'must be an ICMP code 0-255, got the number 300');
  rejects(ic([{ code: 1 }]), `${f}.type`, 'required');
  rejects(ic([]), 'spec.ingress[0].icmps[0].fields', 'required (at least one ICMP type)');
  rejects(ic([{ type: 8 }], { toPorts: [{ ports: [{ port: '80' }] }] }), 'spec.ingress[0].icmps', /cannot be used with toPorts/);
});

test('TendrilClusterwideNetworkPolicy parses without a namespace and is keyed without one', () => {
  const p = parsePolicyObject({ apiVersion: 'tendril.io/v2', kind: 'TendrilClusterwideNetworkPolicy', metadata: { name: 'cw' }, spec: { endpointSelector: {}, ingress: [{}] } });
  assert.deepEqual([p.kind, p.namespace, policyKey(p)], ['TendrilClusterwideNetworkPolicy', '', 'TendrilClusterwideNetworkPolicy/cw']);
  rejects({ apiVersion: 'tendril.io/v2', kind: 'TendrilClusterwideNetworkPolicy', metadata: { name: 'cw', namespace: 'x' }, spec: { endpointSelector: {} } }, 'metadata.namespace', /cluster-scoped/);
});
