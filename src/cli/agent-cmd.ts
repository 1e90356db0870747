// `tendril agent`: starts the agent and stops it cleanly on SIGTERM/SIGINT.
import { Agent, agentConfig } from '../agent/index.js';
import { rootLogger } from '../util/log.js';

export async function runAgent(opts: Record<string, string | undefined>): Promise<void> {
  // A CNI call's slow kernel steps (creating or deleting its veth) wait on a libuv worker thread, one at a time
  // per call, as do the tcx switcher's attaches: 8 pods at once and the switcher need more than libuv's default
  // 4 threads. libuv reads this when it first starts its pool, which has not happened yet.
  process.env['UV_THREADPOOL_SIZE'] ??= '16';
  const cfg = agentConfig({
    nodeName: opts['nodeName'],
    podCidr: opts['podCidr'],
    nodeIp: opts['nodeIp'],
    stateDir: opts['stateDir'],
    socket: opts['socket'],
    bpfRoot: opts['bpfRoot'],
    cniConfDir: opts['cniConfDir'],
    cniVersion: opts['cniVersion'],
    healthNetns: opts['healthNetns'],
    mtu: opts['mtu'],
    logFile: opts['logFile'],
    store: opts['store'],
    routing: opts['routing'],
    nativeDev: opts['nativeDev'],
    attachMode: opts['attachMode'],
    enablePolicy: opts['enablePolicy'],
    conntrackGcInterval: opts['conntrackGcInterval'],
    masq: {
      enableIpv4Masquerade: opts['enableIpv4Masquerade'],
      enableBpfMasquerade: opts['enableBpfMasquerade'],
      ipv4NativeRoutingCidr: opts['ipv4NativeRoutingCidr'],
      masqueradeInterfaces: opts['masqueradeInterfaces'],
      enableIpMasqAgent: opts['enableIpMasqAgent'],
      ipMasqAgentConfigPath: opts['ipMasqAgentConfigPath'],
      masqueradePortRange: opts['masqueradePortRange'],
    },
    bpfLbAlgorithm: opts['bpfLbAlgorithm'],
    bpfLbMaglevTableSize: opts['bpfLbMaglevTableSize'],
    k8sKubeconfig: opts['k8sKubeconfig'],
    ipam: opts['ipam'],
    ipamPreAllocate: opts['ipamPreAllocate'],
    ipamHandBackGrace: opts['ipamHandBackGrace'],
    ipamWaitTimeout: opts['ipamWaitTimeout'],
    nodeLeaseDuration: opts['nodeLeaseDuration'],
    nodeLeaseRenewInterval: opts['nodeLeaseRenewInterval'],
    proxyPort: opts['proxyPort'],
    bpfLbSockCgroup: opts['bpfLbSockCgroup'],
    storeCallTimeout: opts['storeCallTimeout'],
  });
  const log = rootLogger(cfg.logFile ? { file: cfg.logFile } : {}).child({ subsys: 'agent', node: cfg.nodeName });
  const agent = new Agent(cfg, log);
  try {
    await agent.start();
  } catch (err) {
    log.fatal({ err }, 'agent failed to start');
    await agent.stop().catch(() => {});
    throw err;
  }
  const stop = (sig: string) => {
    log.info({ signal: sig }, 'stopping agent (datapath stays pinned and keeps forwarding)');
    void agent.stop().finally(() => process.exit(0));
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}
