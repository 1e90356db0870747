// Public types of the policy module: identities, normalized policies, endpoint views and the map entries compiled from them.

/** A security identity as the compiler sees it. */
export interface IdentityInfo {
  id: number;
  /** Security labels, "source:key=value": "k8s:app=web", "k8s:io.kubernetes.pod.namespace=x",
   *  namespace labels as "k8s:io.cilium.k8s.namespace.labels.<key>=<value>", reserved ones "reserved:host". */
  labels: string[];
  /** Only for CIDR identities (allocated by the agent for every TendrilNetworkPolicy CIDR / except): found in the
   *  ipcache, so they stand for addresses outside the cluster. */
  cidr?: string;
  /** Only for ipBlock identities (allocated by the agent for every NetworkPolicy ipBlock cidr / except): looked up by
   *  address in the datapath's ipBlock trie, so they stand for every address of the block, pods included. */
  ipBlock?: string;
}

export type PolicyKind = 'NetworkPolicy' | 'TendrilNetworkPolicy' | 'TendrilClusterwideNetworkPolicy';
export type Direction = 'ingress' | 'egress';
export type L4Protocol = 'TCP' | 'UDP' | 'SCTP';
/** Protocol of a port rule; ANY (Tendril only) = every protocol. */
export type PortProtocol = L4Protocol | 'ANY';

export type SelectorOperator = 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';

/** One requirement on a label. matchLabels {k: v} is normalized to {key: k, operator: 'In', values: [v]}. */
export interface LabelRequirement {
  /** Label source ("k8s", "reserved", ...); null = any source. */
  source: string | null;
  key: string;
  operator: SelectorOperator;
  /** Sorted; empty for Exists/DoesNotExist. */
  values: string[];
}

/** A label selector: every requirement must hold (an empty list selects everything). */
export interface Selector {
  requirements: LabelRequirement[];
}

export type Entity = 'all' | 'world' | 'cluster' | 'host' | 'remote-node' | 'health' | 'init' | 'unmanaged' | 'none';

/** One peer of a rule: the set of remote identities it stands for. */
export type Peer =
  /** Every remote, identity 0 (K8s: absent/empty from/to; Tendril: entity all, or a port-only rule). */
  | { type: 'any' }
  | {
      type: 'endpoints';
      /** Pod labels. */
      selector: Selector;
      /** Only pods of this namespace; null = any namespace. */
      namespace: string | null;
      /** Requirements on namespace labels (keys already rewritten to io.cilium.k8s.namespace.labels.*); null = none. */
      namespaceSelector: Selector | null;
      /** Whether reserved identities (host, health, ...) may match too (the selector names a reserved: label). */
      includeReserved: boolean;
    }
  /** Cilium's CIDR peer (TendrilNetworkPolicy): CIDR identities inside cidr and not inside an except, i.e. addresses
   *  outside the cluster; world itself iff cidr is 0.0.0.0/0. */
  | { type: 'cidr'; cidr: string; except: string[] }
  /** Kubernetes' ipBlock: every address inside cidr and not inside an except — pods, nodes and world alike. */
  | { type: 'ipBlock'; cidr: string; except: string[] }
  | { type: 'entity'; entity: Entity };

/** One port clause of a rule. */
export type PortMatch =
  /** Every port of the protocol (ANY: every protocol). */
  | { kind: 'all'; protocol: PortProtocol }
  /** Ports from..to inclusive (a single port has from === to). */
  | { kind: 'range'; protocol: PortProtocol; from: number; to: number }
  /** A named container port, resolved at compile time. */
  | { kind: 'named'; protocol: PortProtocol; name: string }
  /** ICMP (IPv4) messages of a type, and of one code of it unless code is null (Tendril's icmps). */
  | { kind: 'icmp'; type: number; code: number | null };

/** A normalized rule: traffic with any of the peers on any of the ports is allowed (or denied). */
export interface PolicyRule {
  direction: Direction;
  deny: boolean;
  /** ORed; empty = matches nothing. */
  peers: Peer[];
  /** ORed; empty = every port and protocol. */
  ports: PortMatch[];
  /** L7 rule (TendrilNetworkPolicy toPorts[].rules.http): traffic on these ports goes through the node proxy,
   *  which allows the requests any of these rules matches. Absent = L4 only. Never on a deny rule. */
  http?: HttpRule[];
}

/** One subject of a policy (a K8s NetworkPolicy has one; a TendrilNetworkPolicy one per spec/specs entry). */
export interface PolicySpec {
  /** Selects the subject endpoints among the pods of the policy's namespace. */
  endpointSelector: Selector;
  /** Directions this spec puts under policy for the endpoints it selects. */
  enforces: { ingress: boolean; egress: boolean };
  /** Whether it also makes that direction default-deny (false only with Tendril enableDefaultDeny: false). */
  defaultDeny: { ingress: boolean; egress: boolean };
  rules: PolicyRule[];
}

export interface Policy {
  kind: PolicyKind;
  /** '' for a TendrilClusterwideNetworkPolicy: it selects endpoints of every namespace. */
  namespace: string;
  name: string;
  specs: PolicySpec[];
  /** The document as given (for `policy get`). */
  source: unknown;
}

export interface EndpointView {
  /** Endpoint ID (local to the node). */
  id: number;
  namespace: string;
  identity: number;
  /** The identity's security labels. */
  labels: string[];
  namedPorts: { name: string; port: number; protocol: L4Protocol }[];
}

export interface ClusterView {
  /** Every identity known cluster-wide incl. reserved and CIDR. */
  identities: IdentityInfo[];
  /** Every endpoint of the cluster (all nodes): for egress named ports. */
  endpoints: Pick<EndpointView, 'identity' | 'namedPorts'>[];
}

export interface PolicyEntry {
  direction: Direction;
  /** Remote identity, 0 = any. */
  identity: number;
  /** IP protocol: 0 = any, 1 ICMP, 6 TCP, 17 UDP, 132 SCTP. */
  protocol: number;
  /** First port of the block; 0 when portPrefixLen is 0. ICMP: type << 8 | code (prefix 8 = the type, any code). */
  port: number;
  /** 0..16: how many leading bits of dport must match (0 = any port; 16 = exactly `port`). 0 when protocol is 0. */
  portPrefixLen: number;
  deny: boolean;
  /** Present on an allow entry whose traffic goes through the node proxy: the HTTP rules (merged from every
   *  policy, sorted, unique) of which one must match each request. Absent = allowed at L4, not proxied. */
  http?: HttpRule[];
  /** Policy keys that produced it, sorted (or a reserved:* reason for entries the compiler adds itself). */
  derivedFrom: string[];
}

export interface EndpointPolicy {
  /** enforced: the datapath must look the direction up (else everything passes).
   *  defaultDeny: whether traffic matching no entry is dropped (false only when only enableDefaultDeny:false
   *  policies select the endpoint; the compiler then adds an allow-all entry so denies still apply). */
  ingress: { enforced: boolean; defaultDeny: boolean };
  egress: { enforced: boolean; defaultDeny: boolean };
  /** Sorted deterministically, no duplicate (direction, identity, protocol, port, portPrefixLen). */
  entries: PolicyEntry[];
}

export type EnforcementMode = 'default' | 'always' | 'never';

/** One header condition of an HTTP rule: the header is present (value null) or has exactly this value. */
export interface HttpHeaderMatch {
  /** Lower-case header name. */
  name: string;
  value: string | null;
}

/** One HTTP rule of an L7 port rule (CiliumNetworkPolicy `rules.http[]`): a request is allowed when every
 *  condition given holds. method, path and host are extended regular expressions matched against the whole
 *  string (null = any). */
export interface HttpRule {
  method: string | null;
  path: string | null;
  host: string | null;
  /** Sorted by name then value; every one must hold. */
  headers: HttpHeaderMatch[];
}
