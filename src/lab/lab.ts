// The lab: a whole cluster on one Linux machine. Nodes and pods are network namespaces on an underlay bridge that
// lives in its own namespace (no uplink); one agent process per node runs inside the node's namespace; pods are
// created by executing the CNI plugin exactly as a container runtime does.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Netns } from '../kernel/netns/index.js';
import { Netlink } from '../kernel/netlink/index.js';
import { removePinned } from '../kernel/bpf/index.js';
import { ApiClient } from '../util/api-client.js';
import { readJsonFile, writeJsonFile } from '../agent/state-file.js';
import type { ConfigView } from '../agent/index.js';
import type { NodeDeleteResult, OperatorStatusView } from '../operator/index.js';
import { formatCidr, formatIPv4, parseCidr, subnet } from '../util/ip.js';
import { LabError } from './errors.js';
import type { NamedPort } from '../store/types.js';
import { bridgeApiserver, bridgeApiserverInto } from './k8s.js';
import { labK8sDown, labK8sNodeGone, labPodCreating, labPodDeleted, labPodStarted } from './k8s-kubelet.js';
import { CLI_JS, CNI_BIN_DIR, NETNS_DIR, WEBPOD_JS, labPaths, netnsPath, nodeNames, validLabName } from './paths.js';
import { alive, sleep, spawnInNetns, stopProcesses, stopProcessesIn } from './procs.js';
import { ensureNodeCgroup, ensurePodCgroup, inNetnsArgv, labCgroupPids, removeLabCgroups, removeNetnsCgroup } from './cgroups.js';
import { hasLedger, ownNetns, ownPid, ownedBy, ownedPids } from './owned.js';
import { relaySocketIn } from '../observe/index.js';
import { masqAgentArgs, parseMasqCidrs, requireIpMasqAgent, writeMasqFile, type LabMasq } from './masq.js';
import type { LabExternal, LabNetwork } from './outside.js';
import { labEgressPool } from './egress.js';
import { agentIpamArgs, checkLabIpam, operatorIpamArgs, setNodePodCidrs, type LabIpam } from './ipam-args.js';

export const DEFAULT_LAB = 'tendril';

export interface LabNode {
  name: string;
  ip: string;
  podCidr: string;
  netns: string;
  socket: string;
  pid: number;
}

export interface LabPod {
  name: string;
  namespace: string;
  node: string;
  netns: string;
  containerId: string;
  ip: string;
  labels: Record<string, string>;
  /** Pod annotations (ipam.tendril.io/ip-pool), handed to the CNI as labels are. */
  annotations?: Record<string, string>;
  /** Kubernetes service account (absent in states of earlier versions: "default"). */
  serviceAccount?: string;
  /** The web pod server: its first port, every port (TCP and UDP each), its pid. */
  serve?: { port: number; ports?: number[]; pid: number };
  /** Declared container ports (named ports for policies). */
  ports?: NamedPort[];
  /** The ADD result, handed back as prevResult on CHECK and DEL as a runtime does. */
  result?: unknown;
}

export type StoreKind = 'local' | 'etcd';
export type RoutingMode = 'tunnel' | 'native';

export interface LabState {
  name: string;
  podCidr: string;
  underlayCidr: string;
  routing: RoutingMode;
  store: StoreKind;
  /** URL the agents use to reach the cluster store. */
  storeUrl: string;
  /** Kubernetes mode: the kubeconfig agents and operator use instead of the store. */
  kubeconfig?: string;
  /** Control-plane address on the underlay bridge (operator, etcd). */
  controlIP: string;
  operatorPid: number;
  /** hubble-relay's role: merges every node's flows (tendril observe talks to it). */
  relayPid?: number;
  etcdPid?: number;
  /** With --etcd-members: every member's pid, by member index (etcdPid is the first's). */
  etcdPids?: number[];
  attachMode?: 'tcx' | 'tc';
  /** IPAM of the lab (absent: cluster-pool with /24 node CIDRs); see src/lab/ipam.ts. */
  ipam?: LabIpam;
  created: string;
  nodes: LabNode[];
  pods: LabPod[];
  /** Hosts on the underlay that are no nodes, and networks behind them (outside.ts). */
  externals?: LabExternal[];
  networks?: LabNetwork[];
  /** The agents' ip-masq-agent config (masq.ts); absent: agents run without one. */
  masq?: LabMasq;
  /** The agents' --proxy-port (absent: their default). */
  proxyPort?: number;
  /** lab up --socket-lb: agents attach socket LB to a cgroup per node (src/lab/cgroups.ts). */
  socketLb?: boolean;
}

export interface UpOptions {
  name?: string;
  nodes?: number;
  podCidr?: string;
  underlayCidr?: string;
  mtu?: number;
  routing?: RoutingMode;
  store?: StoreKind;
  /** Members of the lab's etcd cluster (--store etcd): 1 by default. */
  etcdMembers?: number;
  attachMode?: 'tcx' | 'tc';
  /** Destinations pod traffic is not masqueraded towards: every node's agent gets an ip-masq-agent file. */
  nonMasqueradeCidrs?: string[];
  /** IPAM mode and sizes (default cluster-pool, /24 per node). */
  ipam?: LabIpam;
  /** Kubernetes mode: agents and operator use this apiserver (https://127.0.0.1:PORT) as the store (src/lab/k8s.ts). */
  kubeconfig?: string;
  /** The node L7 proxy's port on every agent (--proxy-port). */
  proxyPort?: number;
  /** Socket-level LB: a cgroup per node (src/lab/cgroups.ts) whose sockets the agent's sock programs serve. */
  socketLb?: boolean;
  /** Called with progress lines. */
  progress?: (line: string) => void;
}

const UNDERLAY_BRIDGE = 'br0';

export function loadLab(name = DEFAULT_LAB): LabState {
  const st = readJsonFile<LabState>(labPaths(name).stateFile);
  if (!st) throw new LabError('TENDRIL_ERR_LAB_NOT_FOUND', `Lab "${name}" is not up (run: tendril lab up --name ${name})`);
  return st;
}

export function labExists(name = DEFAULT_LAB): boolean {
  return fs.existsSync(labPaths(name).stateFile);
}

export function listLabs(): string[] {
  try {
    return fs.readdirSync(path.dirname(labPaths('x').dir)).filter((n) => labExists(n));
  } catch {
    return [];
  }
}

export function saveLab(st: LabState): void {
  save(st);
}

function save(st: LabState): void {
  writeJsonFile(labPaths(st.name).stateFile, st);
}

export function findNode(st: LabState, name: string): LabNode {
  const n = st.nodes.find((x) => x.name === name);
  if (!n) {
    throw new LabError('TENDRIL_ERR_LAB_NODE_NOT_FOUND', `Node "${name}" is not in lab "${st.name}" (nodes: ${st.nodes.map((x) => x.name).join(', ')})`);
  }
  return n;
}

export function findPod(st: LabState, ref: string): LabPod {
  const [ns, name] = ref.includes('/') ? (ref.split('/', 2) as [string, string]) : [undefined, ref];
  const hits = st.pods.filter((p) => p.name === name && (ns === undefined || p.namespace === ns));
  if (hits.length === 0) throw new LabError('TENDRIL_ERR_LAB_POD_NOT_FOUND', `Pod "${ref}" not found in lab "${st.name}"`);
  if (hits.length > 1) throw new LabError('TENDRIL_ERR_LAB_POD_NOT_FOUND', `Pod name "${ref}" is ambiguous: use NAMESPACE/NAME`);
  return hits[0]!;
}

/** Brings a lab up; on any failure everything made so far is removed again. */
export async function labUp(o: UpOptions = {}): Promise<LabState> {
  const name = o.name ?? DEFAULT_LAB;
  if (!validLabName(name)) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid lab name "${name}": use 1-20 of a-z, 0-9, "-"`);
  const count = o.nodes ?? 1;
  if (!Number.isInteger(count) || count < 1 || count > 32) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid --nodes ${String(o.nodes)}: expected 1-32`);
  const pool = parseLabCidr(o.podCidr ?? '172.20.0.0/16', '--pod-cidr');
  const ipam = checkLabIpam(o.ipam);
  const maskSize = ipam.maskSize ?? 24;
  if (pool.bits > maskSize - Math.ceil(Math.log2(count))) {
    throw new LabError('TENDRIL_ERR_LAB_INVALID', `--pod-cidr ${formatCidr(pool)} has fewer than ${count} /${maskSize} subnets`);
  }
  const underlay = parseLabCidr(o.underlayCidr ?? '192.168.10.0/24', '--underlay-cidr');
  if (underlay.bits > 24) throw new LabError('TENDRIL_ERR_LAB_INVALID', `--underlay-cidr must be a /24 or larger`);
  if (labExists(name)) throw new LabError('TENDRIL_ERR_LAB_EXISTS', `Lab "${name}" is already up (tendril lab down --name ${name} removes it)`);
  const p = labPaths(name);
  if (hasLedger(name)) throw new LabError('TENDRIL_ERR_LAB_EXISTS', `Leftovers of lab "${name}" exist: run tendril lab down --name ${name} first`);
  if (Netns.exists(p.underlayNetns, NETNS_DIR)) {
    throw new LabError(
      'TENDRIL_ERR_LAB_EXISTS',
      `Network namespace ${p.underlayNetns} exists but lab "${name}" has no record of it: if it is a leftover, remove it (ip netns del ${p.underlayNetns})`,
    );
  }
  const routing = o.routing ?? 'tunnel';
  if (routing !== 'tunnel' && routing !== 'native') throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid --routing "${String(routing)}": expected tunnel or native`);
  const storeKind = o.store ?? 'local';
  if (storeKind !== 'local' && storeKind !== 'etcd') throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid --store "${String(storeKind)}": expected local or etcd`);
  const etcdMembers = o.etcdMembers ?? 1;
  if (!Number.isInteger(etcdMembers) || etcdMembers < 1 || etcdMembers > 7) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid --etcd-members ${String(o.etcdMembers)}: expected 1-7`);
  if (etcdMembers > 1 && storeKind !== 'etcd') throw new LabError('TENDRIL_ERR_LAB_INVALID', `--etcd-members ${etcdMembers} needs --store etcd`);
  const say = o.progress ?? (() => {});
  const masq: LabMasq | undefined = o.nonMasqueradeCidrs?.length ? { nonMasqueradeCidrs: parseMasqCidrs(o.nonMasqueradeCidrs), masqLinkLocal: false } : undefined;
  if (masq) requireIpMasqAgent();
  const controlIP = formatIPv4(underlay.base + 1);
  const st: LabState = {
    name,
    podCidr: formatCidr(pool),
    underlayCidr: formatCidr(underlay),
    routing,
    store: storeKind,
    storeUrl: storeKind === 'etcd' ? etcdUrl(controlIP, etcdMembers) : `local+unix://${p.storeSocket}`,
    controlIP,
    operatorPid: 0,
    ...(o.attachMode ? { attachMode: o.attachMode } : {}),
    ...(o.ipam ? { ipam } : {}),
    ...(o.kubeconfig ? { kubeconfig: o.kubeconfig } : {}),
    created: new Date().toISOString(),
    nodes: [],
    pods: [],
    ...(masq ? { masq } : {}),
    ...(o.proxyPort !== undefined ? { proxyPort: o.proxyPort } : {}),
    ...(o.socketLb ? { socketLb: true } : {}),
  };
  fs.mkdirSync(p.dir, { recursive: true, mode: 0o700 });
  save(st);
  try {
    ownNetns(name, p.underlayNetns);
    const u = Netns.create(p.underlayNetns, NETNS_DIR);
    const unl = Netlink.openIn(u);
    try {
      unl.setLink('lo', { up: true });
      unl.createBridge({ name: UNDERLAY_BRIDGE });
      unl.setLink(UNDERLAY_BRIDGE, { up: true });
      const br = unl.getLink(UNDERLAY_BRIDGE)!;
      unl.addAddress(br.index, `${controlIP}/${underlay.bits}`);
      say(`underlay ${formatCidr(underlay)} on bridge ${UNDERLAY_BRIDGE} in netns ${p.underlayNetns}, control plane ${controlIP}`);
      const names = nodeNames(count);
      for (let i = 0; i < names.length; i++) {
        const node = names[i]!;
        const ip = formatIPv4(underlay.base + 100 + i);
        wireNode(name, unl, br.index, node, `${ip}/${underlay.bits}`);
        st.nodes.push({ name: node, ip, podCidr: '', netns: p.node(node).netns, socket: p.node(node).socket, pid: 0 });
      }
    } finally {
      unl.close();
      u.close();
    }
    if (storeKind === 'etcd') {
      st.etcdPids = await startEtcd(name, controlIP, etcdMembers);
      st.etcdPid = st.etcdPids[0]!;
      say(`etcd ${st.etcdPids.map((pid, i) => `${etcdMember(controlIP, i).client.slice(7)} (pid ${pid})`).join(', ')}`);
    }
    if (st.kubeconfig) await bridgeApiserver(name, p.dir, st.kubeconfig, [p.underlayNetns, ...st.nodes.map((n) => n.netns)]);
    st.operatorPid = await startOperator(st);
    save(st);
    say(`operator pid ${st.operatorPid}: ${ipam.mode ?? 'cluster-pool'} ${st.podCidr} /${maskSize} per node, ${st.kubeconfig ? `store kubernetes (${st.kubeconfig})` : `store ${storeKind} (${st.storeUrl})`}`);
    st.relayPid = await startRelay(st);
    save(st);
    say(`relay pid ${st.relayPid}: flows of every node on ${relaySocketIn(p.dir)}`);
    // One node after the other, so CIDRs are handed out in node order (ctr gets the first).
    for (const [i, n] of st.nodes.entries()) {
      // --ipam kubernetes: the lab plays kube-controller-manager and gives each node its CIDR before its agent runs.
      if (ipam.mode === 'kubernetes') await setNodePodCidrs(name, n.name, [formatCidr(subnet(pool, maskSize, i))]);
      n.pid = startAgent(st, n);
      save(st);
      n.podCidr = await waitForAgent(name, n);
      save(st);
      say(`node ${n.name.padEnd(4)} ${n.ip.padEnd(15)} pods ${n.podCidr.padEnd(16)} agent pid ${n.pid} ready (${routing})`);
    }
    return st;
  } catch (err) {
    await labDown(name).catch(() => {});
    throw err;
  }
}

/** A node: its namespace, plugged into the underlay bridge with `addr` on its eth0. */
function wireNode(lab: string, unl: Netlink, bridgeIndex: number, node: string, addr: string): void {
  const np = labPaths(lab).node(node);
  ownNetns(lab, np.netns);
  const ns = Netns.create(np.netns, NETNS_DIR);
  try {
    unl.createVeth({ name: np.underlayIf, peerName: 'eth0', peerNetns: ns });
    unl.setLink(np.underlayIf, { masterIndex: bridgeIndex, up: true });
    const nnl = Netlink.openIn(ns);
    try {
      nnl.setLink('lo', { up: true });
      const eth = nnl.getLink('eth0')!;
      nnl.addAddress(eth.index, addr);
      nnl.setLink(eth.index, { up: true });
    } finally {
      nnl.close();
    }
  } finally {
    ns.close();
  }
}

/** Adds a worker node to a running lab (next free wN name and address). */
export async function labNodeAdd(lab: string, o: { wait?: boolean; name?: string; podCidrs?: string[] } = {}): Promise<LabNode> {
  const st = loadLab(lab);
  const p = labPaths(lab);
  const underlay = parseCidr(st.underlayCidr);
  let i = 1;
  while (st.nodes.some((n) => n.name === `w${i}`)) i++;
  const name = o.name ?? `w${i}`;
  if (!/^[a-z][a-z0-9]{0,7}$/.test(name)) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid node name "${name}": 1-8 of a-z, 0-9, starting with a letter`);
  if (st.nodes.some((n) => n.name === name)) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Node "${name}" is already in lab "${lab}"`);
  if (o.podCidrs && st.ipam?.mode !== 'kubernetes') throw new LabError('TENDRIL_ERR_LAB_INVALID', `--pod-cidr needs a lab with --ipam kubernetes (lab "${lab}" uses ${st.ipam?.mode ?? 'cluster-pool'}: the operator assigns CIDRs)`);
  if (st.ipam?.mode === 'kubernetes' && !o.podCidrs && o.wait !== false) {
    throw new LabError('TENDRIL_ERR_LAB_INVALID', `Lab "${lab}" uses --ipam kubernetes: give the node its CIDR (lab node add ${name} --pod-cidr CIDR)`);
  }
  if (o.podCidrs) await setNodePodCidrs(lab, name, o.podCidrs);
  let offset = 0;
  while (st.nodes.some((n) => n.ip === formatIPv4(underlay.base + 100 + offset))) offset++;
  const ip = formatIPv4(underlay.base + 100 + offset);
  const u = Netns.open(netnsPath(p.underlayNetns));
  const unl = Netlink.openIn(u);
  try {
    wireNode(lab, unl, unl.getLink(UNDERLAY_BRIDGE)!.index, name, `${ip}/${underlay.bits}`);
  } finally {
    unl.close();
    u.close();
  }
  const n: LabNode = { name, ip, podCidr: '', netns: p.node(name).netns, socket: p.node(name).socket, pid: 0 };
  st.nodes.push(n);
  // Kubernetes mode: the new node's netns reaches the apiserver like the others (src/lab/k8s.ts).
  if (st.kubeconfig) bridgeApiserverInto(lab, p.dir, st.kubeconfig, n.netns);
  n.pid = startAgent(st, n);
  save(st);
  if (o.wait === false) return n;
  n.podCidr = await waitForAgent(lab, n);
  save(st);
  return n;
}

/**
 * Removes a node as if the machine left the cluster: its agent and pods stop, its namespaces go, and its Node is
 * deleted from the cluster store (the operator frees its CIDR after the grace period; other nodes drop its routes).
 */
export async function labNodeDel(lab: string, name: string): Promise<LabNode> {
  const st = loadLab(lab);
  const n = findNode(st, name);
  if (st.nodes.length === 1) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Node ${name} is the lab's only node: use tendril lab down`);
  const p = labPaths(lab);
  const pods = st.pods.filter((x) => x.node === name);
  await stopProcessesIn([...pods.map((x) => x.netns), p.node(name).netns, p.node(name).healthNetns]);
  for (const pod of pods) Netns.delete(pod.netns, NETNS_DIR);
  // Delete the underlay veth now: a namespace's devices go only when the kernel gets to destroying it, later.
  const u = Netns.open(netnsPath(p.underlayNetns));
  const unl = Netlink.openIn(u);
  try {
    unl.deleteLink(p.node(name).underlayIf);
  } finally {
    unl.close();
    u.close();
  }
  Netns.delete(p.node(name).netns, NETNS_DIR);
  Netns.delete(p.node(name).healthNetns, NETNS_DIR);
  if (fs.existsSync(p.node(name).bpfRoot)) removePinned(p.node(name).bpfRoot);
  fs.rmSync(p.node(name).dir, { recursive: true, force: true });
  await new ApiClient(p.operatorSocket, 'operator').request<NodeDeleteResult>('DELETE', `/v1/nodes/${encodeURIComponent(name)}`).catch((err: unknown) => {
    if ((err as { status?: number }).status !== 404) throw err;
  });
  const fresh = loadLab(lab);
  fresh.nodes = fresh.nodes.filter((x) => x.name !== name);
  fresh.pods = fresh.pods.filter((x) => x.node !== name);
  save(fresh);
  // Kubernetes mode: its Node, if the lab registered it (src/lab/k8s-kubelet.ts).
  await labK8sNodeGone(fresh, name);
  return n;
}

function parseLabCidr(text: string, flag: string) {
  try {
    return parseCidr(text);
  } catch (err) {
    throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid ${flag}: ${(err as Error).message}`);
  }
}

function startAgent(st: LabState, n: LabNode, mtu?: number): number {
  const np = labPaths(st.name).node(n.name);
  const args = [
    process.execPath,
    CLI_JS,
    'agent',
    '--node-name', n.name,
    '--node-ip', n.ip,
    ...(st.kubeconfig ? ['--k8s-kubeconfig', st.kubeconfig] : ['--store', st.storeUrl]),
    '--routing', st.routing,
    '--native-dev', 'eth0',
    '--attach-mode', st.attachMode ?? 'tcx',
    '--state-dir', np.stateDir,
    '--socket', np.socket,
    '--bpf-root', np.bpfRoot,
    '--cni-conf-dir', np.cniConfDir,
    '--health-netns', np.healthNetns,
    ...(mtu ? ['--mtu', String(mtu)] : []),
    ...masqAgentArgs(st.name, n.name, st.masq),
    ...agentIpamArgs(st.ipam),
    ...(st.proxyPort !== undefined ? ['--proxy-port', String(st.proxyPort)] : []),
    ...(st.socketLb ? ['--bpf-lb-sock-cgroup', ensureNodeCgroup(st.name, n.name, np.netns)] : []),
  ];
  if (st.masq) writeMasqFile(st.name, n.name, st.masq);
  ownNetns(st.name, np.healthNetns);
  return ownPid(st.name, spawnInNetns(np.netns, args, np.logFile));
}

/** etcd member `i` of a lab, all on the control IP: ports 2379/2380, 12379/12380, 22379/22380, … */
export function etcdMember(ip: string, i: number): { name: string; client: string; peer: string } {
  const port = 2379 + 10_000 * i;
  return { name: `etcd${i}`, client: `http://${ip}:${port}`, peer: `http://${ip}:${port + 1}` };
}

function etcdUrl(ip: string, members: number): string {
  if (members === 1) return `etcd://${ip}:2379`;
  return 'etcd+' + Array.from({ length: members }, (_, i) => etcdMember(ip, i).client).join(',');
}

/** Starts the members `which` (default all) of the lab's `members`-member etcd cluster; resolves once each is healthy. */
async function startEtcd(lab: string, ip: string, members: number, which?: number[]): Promise<number[]> {
  const p = labPaths(lab);
  const all = Array.from({ length: members }, (_, i) => etcdMember(ip, i));
  const cluster = all.map((m) => `${m.name}=${m.peer}`).join(',');
  const started = (which ?? all.map((_, i) => i)).map((i) => {
    const m = all[i]!;
    const log = path.join(p.dir, `${m.name}.log`);
    const pid = spawnOwned(
      lab,
      p.underlayNetns,
      ['etcd', '--name', m.name, '--data-dir', path.join(p.dir, 'etcd', m.name), '--listen-client-urls', m.client, '--advertise-client-urls', m.client,
        '--listen-peer-urls', m.peer, '--initial-advertise-peer-urls', m.peer, '--initial-cluster', cluster, '--initial-cluster-token', `tendril-lab-${lab}`,
        '--log-level', 'warn'],
      log,
    );
    return { m, pid, log };
  });
  // Members of a new cluster wait for each other: all are started before any is waited for.
  const deadline = Date.now() + 20_000;
  for (const { m, pid, log } of started) {
    for (;;) {
      if (!alive(pid)) throw new LabError('TENDRIL_ERR_LAB_AGENT', `etcd member ${m.name} exited during start-up:\n${tail(log, 15)}`);
      if (execCapture(p.underlayNetns, ['curl', '-s', '--max-time', '1', `${m.client}/health`], 3000).stdout.includes('true')) break;
      if (Date.now() > deadline) throw new LabError('TENDRIL_ERR_LAB_AGENT', `etcd member ${m.name} not healthy after 20 s:\n${tail(log, 15)}`);
      await sleep(100);
    }
  }
  return started.map((x) => x.pid);
}

export async function startOperator(st: LabState): Promise<number> {
  const p = labPaths(st.name);
  const storeArgs = st.kubeconfig
    ? ['--k8s-kubeconfig', st.kubeconfig]
    : st.store === 'etcd' ? ['--store', st.storeUrl] : ['--store-listen', `unix://${p.storeSocket}`, '--store-data', path.join(p.dir, 'store')];
  const pid = spawnOwned(
    st.name,
    p.underlayNetns,
    [process.execPath, CLI_JS, 'operator', ...operatorIpamArgs(st.podCidr, st.ipam), ...storeArgs,
      '--api-socket', p.operatorSocket, '--node-cidr-grace', '30s', '--egress-ip-pool', labEgressPool(st.underlayCidr)],
    p.operatorLog,
  );
  const client = new ApiClient(p.operatorSocket, 'operator');
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (!alive(pid)) throw new LabError('TENDRIL_ERR_LAB_AGENT', `Operator exited during start-up:\n${tail(p.operatorLog, 15)}`);
    try {
      await client.get<OperatorStatusView>('/v1/status');
      return pid;
    } catch {
      await sleep(100);
    }
  }
  throw new LabError('TENDRIL_ERR_LAB_AGENT', `Operator not ready after 20 s:\n${tail(p.operatorLog, 15)}`);
}

/** The flow relay of the lab, next to the operator; it re-reads the lab's nodes as they come and go. */
async function startRelay(st: LabState): Promise<number> {
  const p = labPaths(st.name);
  const socket = relaySocketIn(p.dir);
  const log = path.join(p.dir, 'relay.log');
  const pid = spawnOwned(st.name, p.underlayNetns, [process.execPath, CLI_JS, '--lab', st.name, 'observe', 'relay', '--listen', socket], log);
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (!alive(pid)) throw new LabError('TENDRIL_ERR_LAB_AGENT', `Relay exited during start-up:\n${tail(log, 15)}`);
    if (fs.existsSync(socket)) return pid;
    await sleep(50);
  }
  throw new LabError('TENDRIL_ERR_LAB_AGENT', `Relay not listening after 20 s:\n${tail(log, 15)}`);
}

/** Restarts one node's agent (pinned programs and maps keep forwarding meanwhile). */
export async function restartAgent(lab: string, node: string): Promise<LabNode> {
  const st = loadLab(lab);
  const n = findNode(st, node);
  await stopProcesses([n.pid]);
  n.pid = startAgent(st, n);
  save(st);
  await waitForAgent(lab, n);
  return n;
}

/**
 * Restarts the cluster store (every etcd member, or the operator hosting the local store); agents must ride it out.
 * `etcdMember`: restart only that member of the lab's etcd cluster.
 */
export async function restartStore(lab: string, downMs = 500, etcdMember?: number): Promise<void> {
  const st = loadLab(lab);
  const pids = st.etcdPids ?? (st.etcdPid ? [st.etcdPid] : []);
  if (st.store === 'etcd' && pids.length > 0) {
    const which = etcdMember === undefined ? pids.map((_, i) => i) : [etcdMember];
    if (which.some((i) => pids[i] === undefined)) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Lab "${lab}" has no etcd member ${String(etcdMember)} (members 0-${pids.length - 1})`);
    await stopProcesses(which.map((i) => pids[i]!));
    await sleep(downMs);
    const fresh = await startEtcd(lab, st.controlIP, pids.length, which);
    which.forEach((m, k) => (pids[m] = fresh[k]!));
    st.etcdPids = pids;
    st.etcdPid = pids[0]!;
  } else {
    await stopProcesses([st.operatorPid]);
    await sleep(downMs);
    st.operatorPid = await startOperator(st);
  }
  save(st);
}

/** Waits until the agent has its pod CIDR and datapath; returns the CIDR. */
async function waitForAgent(lab: string, n: LabNode, timeoutMs = 30_000): Promise<string> {
  const client = new ApiClient(n.socket);
  const deadline = Date.now() + timeoutMs;
  const logFile = labPaths(lab).node(n.name).logFile;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (!alive(n.pid)) {
      throw new LabError('TENDRIL_ERR_LAB_AGENT', `Agent of node ${n.name} exited during start-up:\n${tail(logFile, 15)}`);
    }
    try {
      const cfg = await client.get<ConfigView>('/v1/config');
      if (cfg.ready && cfg['pod-cidr']) return cfg['pod-cidr'];
      last = 'no pod CIDR yet';
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(100);
  }
  throw new LabError('TENDRIL_ERR_LAB_AGENT', `Agent of node ${n.name} not ready after ${timeoutMs / 1000} s (${last}):\n${tail(logFile, 15)}`);
}

function tail(file: string, lines: number): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/**
 * The lab's namespaces by exact name, newest first (pods before their node, the underlay last): those its ledger
 * recorded, and those its state names (a lab made before the ledger existed, or a ledger lost).
 */
function labNamespaces(name: string): string[] {
  const p = labPaths(name);
  const recorded = ownedBy(name).flatMap((e) => (e.kind === 'netns' ? [e.name] : []));
  let st: LabState | undefined;
  try {
    st = readJsonFile<LabState>(p.stateFile);
  } catch {
    st = undefined; // unreadable state: the ledger is all there is
  }
  const outside = st ? [...(st.externals ?? []).map((x) => x.netns), ...(st.networks ?? []).flatMap((n) => n.hosts.map((h) => h.netns))] : [];
  const named = st ? [p.underlayNetns, ...st.nodes.flatMap((n) => [n.netns, p.node(n.name).healthNetns]), ...outside, ...st.pods.map((x) => x.netns)] : [];
  const all = [...new Set([...recorded, ...named])].reverse();
  return [...all.filter((n) => n !== p.underlayNetns), ...all.filter((n) => n === p.underlayNetns)];
}

/** A process of the lab: started in @ns and recorded, so `lab down` ends it and nothing else. */
function spawnOwned(lab: string, ns: string, argv: string[], logFile: string): number {
  return ownPid(lab, spawnInNetns(ns, argv, logFile));
}

/**
 * Removes what the lab recorded making (owned.ts): its processes and whatever else runs inside its namespaces (as a
 * runtime ends a sandbox's containers), the namespaces, its pinned objects and its directory. Safe to run twice.
 */
export async function labDown(name = DEFAULT_LAB): Promise<{ removed: string[] }> {
  if (!validLabName(name)) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid lab name "${name}"`);
  const p = labPaths(name);
  const removed: string[] = [];
  // Kubernetes mode: the Nodes the lab registered for its pods (src/lab/k8s-kubelet.ts).
  removed.push(...(await labK8sDown(name)));
  const namespaces = labNamespaces(name);
  const stopped = await stopProcessesIn(namespaces, [...ownedPids(name), ...labCgroupPids(name)]);
  if (stopped) removed.push(`${stopped} process(es)`);
  for (const dir of removeLabCgroups(name, namespaces)) removed.push(`cgroup ${dir}`);
  for (const ns of namespaces) {
    if (!Netns.exists(ns, NETNS_DIR)) continue;
    Netns.delete(ns, NETNS_DIR);
    removed.push(`netns ${ns}`);
  }
  if (fs.existsSync(p.bpfDir)) {
    removePinned(p.bpfDir);
    removed.push(`bpf pins ${p.bpfDir}`);
  }
  try {
    fs.rmdirSync(path.dirname(p.bpfDir));
  } catch {
    // other labs or agents still pin there
  }
  if (fs.existsSync(p.dir)) {
    fs.rmSync(p.dir, { recursive: true, force: true });
    removed.push(`dir ${p.dir}`);
  }
  // The parents go too once no other lab (or agent) uses them.
  for (const dir of [path.dirname(p.dir), path.dirname(path.dirname(p.dir))]) {
    try {
      fs.rmdirSync(dir);
    } catch {
      break;
    }
  }
  return { removed };
}

export interface PodAddOptions {
  node: string;
  namespace?: string;
  labels?: Record<string, string>;
  /** Pod annotations, e.g. {"ipam.tendril.io/ip-pool": "blue"}. */
  annotations?: Record<string, string>;
  /** Ports the pod's web server listens on (TCP and UDP each). */
  serve?: number | number[];
  /** Declared container ports, e.g. {name: "http", port: 80, protocol: "TCP"}. */
  ports?: NamedPort[];
  /** The pod's service account (default "default"), handed to the CNI as a runtime would. */
  serviceAccount?: string;
}

/** Creates a pod: its namespace, then CNI ADD executed as a runtime does it. */
export async function podAdd(lab: string, name: string, o: PodAddOptions): Promise<LabPod> {
  const st = loadLab(lab);
  const node = findNode(st, o.node);
  const namespace = o.namespace ?? 'default';
  if (!/^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$/.test(name)) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid pod name "${name}": use a-z, 0-9, "-" (DNS label)`);
  if (!/^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$/.test(namespace)) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid namespace "${namespace}"`);
  if (st.pods.some((x) => x.name === name && x.namespace === namespace)) {
    throw new LabError('TENDRIL_ERR_LAB_POD_EXISTS', `Pod ${namespace}/${name} already exists in lab "${lab}"`);
  }
  const serve = o.serve === undefined ? [] : Array.isArray(o.serve) ? o.serve : [o.serve];
  for (const port of serve) {
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid --serve port ${String(port)}`);
  }
  const pp = labPaths(lab).pod(namespace, name);
  ownNetns(lab, pp.netns);
  Netns.create(pp.netns, NETNS_DIR).close();
  if (st.socketLb) ensurePodCgroup(lab, node.name, `${namespace}_${name}`, pp.netns);
  const pod: LabPod = {
    name,
    namespace,
    node: node.name,
    netns: pp.netns,
    containerId: randomBytes(32).toString('hex'),
    ip: '',
    labels: o.labels ?? {},
    ...(o.annotations && Object.keys(o.annotations).length > 0 ? { annotations: o.annotations } : {}),
    serviceAccount: o.serviceAccount ?? 'default',
    ...(o.ports && o.ports.length ? { ports: o.ports } : {}),
  };
  let madePod = false;
  try {
    // Kubernetes mode: the Pod object a user and the scheduler would have made (src/lab/k8s-kubelet.ts).
    madePod = await labPodCreating(st, pod);
    const res = runCni(lab, 'ADD', pod);
    const result = JSON.parse(res) as { ips?: Array<{ address: string }> };
    pod.result = result;
    const addr = result.ips?.[0]?.address;
    if (!addr) throw new LabError('TENDRIL_ERR_LAB_CNI', `CNI ADD returned no IP: ${res}`);
    pod.ip = addr.split('/')[0]!;
    if (serve.length > 0) {
      const pid = spawnOwned(lab, pp.netns, [process.execPath, WEBPOD_JS, '--name', name, '--port', serve.join(',')], pp.logFile);
      pod.serve = { port: serve[0]!, ports: serve, pid };
      await waitForLog(pp.logFile, 'listening', pid);
    }
  } catch (err) {
    await stopProcessesIn([pp.netns]);
    // As a runtime does: a failed ADD is followed by a DEL, which gives back whatever the ADD got to (an
    // address, a veth) even when it never answered with a result.
    try {
      runCni(lab, 'DEL', pod);
    } catch {
      // best effort; the namespace goes below
    }
    Netns.delete(pp.netns, NETNS_DIR);
    removeNetnsCgroup(pp.netns);
    if (madePod) await labPodDeleted(st, pod);
    throw err;
  }
  const fresh = loadLab(lab);
  fresh.pods.push(pod);
  save(fresh);
  // Kubernetes mode: the pod's status, as its kubelet would write it (src/lab/k8s-kubelet.ts).
  await labPodStarted(fresh, pod);
  return pod;
}

export async function waitForLog(file: string, word: string, pid: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (tail(file, 5).includes(word)) return;
    if (!alive(pid)) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Pod server exited:\n${tail(file, 10)}`);
    await sleep(50);
  }
  throw new LabError('TENDRIL_ERR_LAB_INVALID', `Pod server did not start within ${timeoutMs} ms:\n${tail(file, 10)}`);
}

export async function podDel(lab: string, ref: string): Promise<LabPod> {
  const st = loadLab(lab);
  const pod = findPod(st, ref);
  // Its containers end first, as a runtime stops a sandbox's before tearing down its network.
  await stopProcessesIn([pod.netns]);
  runCni(lab, 'DEL', pod);
  Netns.delete(pod.netns, NETNS_DIR);
  removeNetnsCgroup(pod.netns);
  await labPodDeleted(st, pod);
  const fresh = loadLab(lab);
  fresh.pods = fresh.pods.filter((x) => !(x.name === pod.name && x.namespace === pod.namespace));
  save(fresh);
  return pod;
}

/** The network config a runtime hands the plugin: the conflist's plugin entry plus name, cniVersion, runtime args. */
export function pluginConfig(lab: string, pod: LabPod, prevResult?: unknown): string {
  const np = labPaths(lab).node(pod.node);
  const file = path.join(np.cniConfDir, '05-tendril.conflist');
  const list = readJsonFile<{ cniVersion: string; name: string; plugins: Array<Record<string, unknown>> }>(file);
  if (!list || !list.plugins[0]) throw new LabError('TENDRIL_ERR_LAB_CNI', `Node ${pod.node} has no CNI config at ${file}: is its agent ready?`);
  return JSON.stringify({
    cniVersion: list.cniVersion,
    name: list.name,
    ...list.plugins[0],
    args: {
      cni: { labels: Object.entries(pod.labels).map(([key, value]) => ({ key, value })) },
      tendril: {
        serviceAccount: pod.serviceAccount ?? 'default',
        ...(pod.annotations ? { annotations: pod.annotations } : {}),
        ...(pod.ports ? { ports: pod.ports.map((p) => ({ name: p.name, containerPort: p.port, protocol: p.protocol })) } : {}),
      },
    },
    ...(prevResult !== undefined ? { prevResult } : {}),
  });
}

/** Executes bin/tendril-cni the way a container runtime does: CNI_* environment, network config on stdin. */
export function runCni(lab: string, command: 'ADD' | 'DEL' | 'CHECK', pod: LabPod): string {
  const env = {
    PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: command,
    CNI_CONTAINERID: pod.containerId,
    CNI_NETNS: netnsPath(pod.netns),
    CNI_IFNAME: 'eth0',
    CNI_PATH: CNI_BIN_DIR,
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name};K8S_POD_INFRA_CONTAINER_ID=${pod.containerId}`,
  };
  const r = spawnSync(path.join(CNI_BIN_DIR, 'tendril-cni'), [], { env, input: pluginConfig(lab, pod, command === 'ADD' ? undefined : pod.result), encoding: 'utf8', timeout: 120_000 });
  if (r.error) throw new LabError('TENDRIL_ERR_LAB_CNI', `Cannot execute tendril-cni: ${r.error.message}`);
  if (r.status !== 0) {
    let msg = r.stdout.trim();
    try {
      const e = JSON.parse(r.stdout) as { code?: number; msg?: string; details?: string };
      msg = `code ${e.code}: ${e.msg}${e.details ? ` (${e.details})` : ''}`;
    } catch {
      // not JSON: show raw
    }
    throw new LabError('TENDRIL_ERR_LAB_CNI', `CNI ${command} for pod ${pod.namespace}/${pod.name} failed: ${msg}`);
  }
  return r.stdout;
}

/** Runs a command inside a namespace with the terminal attached; returns its exit code. */
export function execIn(ns: string, argvIn: string[]): number {
  const argv = argvIn[0] === '--' ? argvIn.slice(1) : argvIn;
  if (argv.length === 0) throw new LabError('TENDRIL_ERR_LAB_INVALID', 'Nothing to execute: give a command after "--"');
  const r = spawnSync(...inNetnsArgv(netnsPath(ns), ns, argv), { stdio: 'inherit' });
  if (r.error) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Cannot execute ${argv[0]}: ${r.error.message}`);
  return r.status ?? 1;
}

/** Runs a command inside a namespace and captures its output (tests, demo). */
export function execCapture(ns: string, argv: string[], timeoutMs = 30_000, input?: string): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(...inNetnsArgv(netnsPath(ns), ns, argv), { encoding: 'utf8', timeout: timeoutMs, ...(input !== undefined ? { input } : {}) });
  return { status: r.status ?? 1, stdout: r.stdout ?? '', stderr: r.stderr ?? (r.error?.message ?? '') };
}

export interface NodeHealth {
  node: LabNode;
  running: boolean;
  healthy: boolean;
  pods: number;
}

export async function labStatus(lab: string): Promise<{ st: LabState; nodes: NodeHealth[] }> {
  const st = loadLab(lab);
  const nodes: NodeHealth[] = [];
  for (const n of st.nodes) {
    let healthy = false;
    try {
      await new ApiClient(n.socket).get('/v1/healthz');
      healthy = true;
    } catch {
      healthy = false;
    }
    nodes.push({ node: n, running: alive(n.pid), healthy, pods: st.pods.filter((p) => p.node === n.name).length });
  }
  return { st, nodes };
}
