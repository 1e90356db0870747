// `tendril operator`: registers the command on the CLI program; runs until SIGTERM/SIGINT.
import type { Command } from 'commander';
import { DEFAULT_CLUSTER_POOL_CIDR, DEFAULT_CLUSTER_POOL_MASK_SIZE } from './cluster-pool.js';
import { DEFAULT_OPERATOR_API_SOCKET, DEFAULT_STORE_DATA, type OperatorFlags } from './config.js';
import { runOperator } from './main.js';

function collect(value: string, prev: string[] | undefined): string[] {
  return [...(prev ?? []), value];
}

export function registerOperator(program: Command): Command {
  return program
    .command('operator')
    .description('run the cluster operator (cluster-pool IPAM: a pod CIDR per node), optionally hosting the local store')
    .option('--ipam <mode>', 'IPAM mode: cluster-pool (node CIDRs carved here), kubernetes (given on the Node by someone else) or multi-pool (TendrilPodIPPools besides the cluster pool "default")', 'cluster-pool')
    .option('--cluster-pool-ipv4-cidr <cidr>', `a cluster CIDR node CIDRs are carved from (repeatable; default ${DEFAULT_CLUSTER_POOL_CIDR})`, collect)
    .option('--cluster-pool-cidr <cidr>', 'alias of --cluster-pool-ipv4-cidr', collect)
    .option('--cluster-pool-ipv4-mask-size <bits>', `prefix length of each node CIDR (default ${DEFAULT_CLUSTER_POOL_MASK_SIZE})`)
    .option('--cluster-pool-mask-size <bits>', 'alias of --cluster-pool-ipv4-mask-size')
    .option('--store <url>', 'cluster store to use: etcd://HOST:PORT, local+unix:///path.sock or local://HOST:PORT')
    .option('--store-listen <address>', 'host the local store on unix:///path.sock or HOST:PORT (instead of --store)')
    .option('--k8s-kubeconfig <file>', 'Kubernetes mode: the apiserver of this kubeconfig is the store, replicas elect a leader (in a pod: in-cluster config)')
    .option('--leader-election-namespace <ns>', 'Kubernetes mode: namespace of the tendril-operator Lease', 'kube-system')
    .option('--leader-election-lease-duration <duration>', 'Kubernetes mode: how long a leader that stopped renewing keeps the lease', '15s')
    .option('--store-data <dir>', `data directory of the hosted local store (default: ${DEFAULT_STORE_DATA})`)
    .option('--node-cidr-grace <duration>', "how long a departed node's CIDR is held for it (e.g. 30s, 500ms)", '30s')
    .option('--identity-gc-interval <duration>', 'how often unused identities are looked for', '10s')
    .option('--identity-gc-grace <duration>', 'how long an identity stays unused before it is deleted', '60s')
    .option('--egress-ip-pool <cidr>', 'egress IPs for egress gateway policies that give none (e.g. 192.168.10.240/28)')
    .option('--node-monitor-grace-period <duration>', 'egress gateway failover: a node whose lease went unrenewed this long is gone (never less than the lease\'s own --node-lease-duration; 0: the lease\'s)', '0')
    .option('--api-socket <path>', 'status API unix socket (GET /v1/status)', DEFAULT_OPERATOR_API_SOCKET)
    .option('--log-file <file>', 'log to this file instead of stderr')
    .action(async (opts: OperatorFlags) => {
      const running = await runOperator(opts);
      const stop = (): void => {
        void running.stop().finally(() => process.exit(0));
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
}
