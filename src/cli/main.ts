// The `tendril` command: agent, lab, and the cilium-dbg-like views of a node.
import { Command, Option } from 'commander';
import { runAgent } from './agent-cmd.js';
import { registerLab } from './lab-cmd.js';
import { registerNodeViews } from './node-cmd.js';
import { registerIpamCommands } from './ipam-cmd.js';
import { registerObserve } from './observe-cmd.js';
import { registerMonitor } from './monitor-cmd.js';
import { registerPolicyViews } from './policy-cmd.js';
import { registerNatViews } from './nat-cmd.js';
import { registerEgressViews } from './egress-cmd.js';
import { registerServiceViews } from './service-cmd.js';
import { registerL2Views } from './l2-cmd.js';
import { registerHealthz } from './health-cmd.js';
import { registerOperator } from '../operator/index.js';

const program = new Command();
program
  .name('tendril')
  .description('eBPF networking for container clusters (a Cilium-family CNI)')
  .option('--lab <name>', 'lab whose node to talk to (default: the running lab "tendril")')
  .option('--node <node>', 'node of the lab to talk to (default: ctr)')
  .addOption(new Option('--socket <path>', 'agent API socket (overrides --lab/--node)').env('TENDRIL_SOCK'))
  .enablePositionalOptions()
  .showHelpAfterError()
  .configureHelp({ sortSubcommands: false });

program
  .command('agent')
  .description('run the per-node agent (datapath, IPAM, endpoints, CNI, REST API)')
  .option('--node-name <name>', 'this node\'s name', 'node')
  .option('--pod-cidr <cidr>', 'pod CIDR of this node (default: assigned by the operator through --store)')
  .option('--store <url>', 'cluster store: local+unix:///path.sock, local://HOST:PORT or etcd://HOST:PORT')
  .option('--k8s-kubeconfig <file>', 'Kubernetes mode: the apiserver of this kubeconfig is the cluster store (in a pod: in-cluster config)')
  .option('--routing <mode>', 'tunnel (VXLAN) or native', 'tunnel')
  .option('--native-dev <dev>', 'underlay device (tunnel endpoint, native routing)', 'eth0')
  .option('--attach-mode <mode>', 'tcx (BPF links) or tc (clsact + cls_bpf: pods are added faster)', 'tcx')
  .option('--enable-policy <mode>', 'policy enforcement: default (once a policy selects an endpoint), always or never', 'default')
  .option('--conntrack-gc-interval <duration>', 'how often expired conntrack entries are removed', '30s')
  .option('--enable-ipv4-masquerade <bool>', 'pod traffic to the world leaves with the node\'s address', 'true')
  .option('--enable-bpf-masquerade <bool>', 'masquerade in BPF on the native device (false: iptables MASQUERADE)', 'true')
  .option('--ipv4-native-routing-cidr <cidr>', 'destinations reached without masquerading (e.g. the cluster\'s pod CIDRs)')
  .option('--masquerade-interfaces <if,...>', 'devices masqueraded on (default: the native device)')
  .option('--masquerade-port-range <lo-hi>', 'ports of masqueraded flows (the node\'s own ephemeral range moves out of it)', '32768-60999')
  .option('--enable-ip-masq-agent <bool>', 'non-masquerade CIDRs from the ip-masq-agent config file', 'false')
  .option('--ip-masq-agent-config-path <file>', 'ip-masq-agent config (YAML/JSON: nonMasqueradeCIDRs, masqLinkLocal)', '/etc/tendril/ip-masq-agent.yaml')
  .option('--bpf-lb-algorithm <name>', 'service backend selection: random or maglev', 'random')
  .option('--bpf-lb-maglev-table-size <n>', 'Maglev lookup table size per service (a prime: 251 … 65521)', '1021')
  .option('--ipam <mode>', 'cluster-pool (CIDRs from the operator), kubernetes (the Node\'s podCIDRs, set by someone else) or multi-pool (chunks of the pod\'s IP pool, asked for on demand)', 'cluster-pool')
  .option('--ipam-pre-allocate <n>', 'cluster-pool: ask for another CIDR when fewer addresses are free', '8')
  .option('--ipam-hand-back-grace <duration>', 'cluster-pool: hand an extra CIDR back after it was empty this long', '30s')
  .option('--ipam-wait-timeout <duration>', 'kubernetes: refuse to start when no pod CIDR is given within this', '60s')
  .option('--node-lease-duration <duration>', 'how long one renewal of the node lease lasts: a node whose agent stops renewing is taken as gone after this (egress gateways move)', '5s')
  .option('--node-lease-renew-interval <duration>', 'how often the agent renews its node lease (at most half of --node-lease-duration)', '1s')
  .option('--store-call-timeout <duration>', 'longest a cluster store call may take before the store counts as unavailable (calls then fail fast until it answers again); default 1500ms, 5s in Kubernetes mode')
  .option('--bpf-lb-sock-cgroup <dir>', 'socket-level load-balancing (Cilium\'s --bpf-lb-sock) for the sockets of this cgroup v2 directory (never the root cgroup)')
  .option('--proxy-port <port>', 'the node L7 proxy\'s listener port (one port for every L7 rule of the node)', '15080')
  .option('--node-ip <ip>', 'this node\'s underlay IPv4 address')
  .option('--state-dir <dir>', 'persistent state (IPAM, endpoints)', '/var/lib/tendril')
  .option('--socket <path>', 'REST API unix socket', '/var/run/tendril/tendril.sock')
  .option('--bpf-root <dir>', 'bpffs directory for pinned maps and links')
  .option('--cni-conf-dir <dir>', 'where 05-tendril.conflist is written', '/etc/cni/net.d')
  .option('--health-netns <name>', 'named netns of the health endpoint', 'tendril-health')
  .option('--cni-version <v>', 'cniVersion of the conflist written (default: the latest, 1.1.0; containerd 1.6 takes at most 1.0.0)')
  .option('--mtu <n>', 'device MTU', '1500')
  .option('--log-file <file>', 'log to this file instead of stderr')
  .action(async (opts: Record<string, string | undefined>) => {
    await runAgent(opts);
  });

registerOperator(program);
registerNodeViews(program);
registerIpamCommands(program);
registerPolicyViews(program);
registerNatViews(program);
registerEgressViews(program);
registerServiceViews(program);
registerL2Views(program);
registerHealthz(program);
registerObserve(program);
registerMonitor(program);
registerLab(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  let e = err as { code?: string; message?: string };
  // An uncoded permission failure (a root-only file or socket) says what it needs.
  if (e.code === 'EACCES' || e.code === 'EPERM') {
    e = { code: 'TENDRIL_ERR_PERMISSION', message: `${e.message ?? String(err)}: tendril needs root for this (its state and API sockets are root-only); run it as root (e.g. with sudo)` };
  }
  process.stderr.write(`Error: ${e.message ?? String(err)}${e.code ? ` [${e.code}]` : ''}\n`);
  process.exit(1);
});
