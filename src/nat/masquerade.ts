// Masquerading of one node, as the agent runs it: the datapath's settings, the node's own ephemeral ports kept out
// of the SNAT range, the ip-masq-agent set kept in tendril_ipmasq (or in the iptables fallback), and the status.
import type { MasqDatapathConfig } from '../datapath/index.js';
import type { Logger } from '../util/log.js';
import { masqMode, type MasqConfig } from './config.js';
import type { NatError } from './errors.js';
import { installIptablesMasq, removeIptablesMasq } from './iptables.js';
import { IpMasqWatcher, type IpMasqState } from './ipmasq.js';
import { keepEphemeralOutOf } from './ports.js';

/** What masquerading needs of the datapath. */
export interface MasqDatapath {
  ipmasqReplace(cidrs: readonly string[]): { added: number; removed: number };
}

/** GET /v1/healthz "masquerading". */
export interface MasqStatus {
  mode: 'BPF' | 'iptables' | 'Disabled';
  devices: string[];
  'native-routing-cidr': string | null;
  'port-range': string;
  /** The node's own ephemeral range (kept out of port-range), BPF mode only. */
  'node-ephemeral-range': string | null;
  'ip-masq-agent': (IpMasqState & { enabled: true }) | { enabled: false };
}

export class Masquerade {
  private watcher: IpMasqWatcher | undefined;
  private ephemeral: string | null = null;
  private iptables = false;
  private nonMasq: string[] = [];
  readonly mode: 'bpf' | 'iptables' | 'off';

  constructor(
    private readonly cfg: MasqConfig,
    private readonly node: { nativeDev: string; podCidr: string },
    private readonly log: Logger,
  ) {
    this.mode = masqMode(cfg, node.nativeDev);
  }

  /** NodeDatapathConfig.masquerade: BPF SNAT on the native device when the mode is 'bpf'. */
  datapathConfig(): MasqDatapathConfig | undefined {
    if (this.mode !== 'bpf') return undefined;
    return {
      enabled: true,
      portMin: this.cfg.portMin,
      portMax: this.cfg.portMax,
      ...(this.cfg.nativeRoutingCidr !== undefined ? { nativeRoutingCidr: this.cfg.nativeRoutingCidr } : {}),
      ipMasqAgent: this.cfg.ipMasqAgent,
      ...(this.cfg.interfaces.length > 0 ? { interfaces: [...this.cfg.interfaces] } : {}),
    };
  }

  /** After the datapath started; runs in the node's namespace. A bad ip-masq-agent file is logged (defaults apply). */
  start(dp: MasqDatapath): void {
    if (this.mode === 'bpf') {
      const r = keepEphemeralOutOf(this.cfg.portMin, this.cfg.portMax);
      this.ephemeral = `${r.now.lo}-${r.now.hi}`;
      if (r.now.lo !== r.before.lo || r.now.hi !== r.before.hi) {
        this.log.info({ before: `${r.before.lo}-${r.before.hi}`, now: this.ephemeral }, 'node ephemeral port range moved out of the SNAT range');
      }
    }
    if (this.mode === 'off') return;
    if (this.cfg.ipMasqAgent) {
      this.watcher = new IpMasqWatcher(
        this.cfg.ipMasqAgentConfigPath,
        (cidrs) => this.applyNonMasq(dp, cidrs),
        (err: NatError) => this.log.error({ err: err.message, code: err.code }, 'ip-masq-agent config rejected; keeping the previous set'),
      );
      this.watcher.start();
    } else if (this.mode === 'bpf') {
      dp.ipmasqReplace([]);
    }
    if (this.mode === 'iptables') this.installIptables();
  }

  stop(): void {
    this.watcher?.stop();
    this.watcher = undefined;
    if (this.iptables) {
      try {
        removeIptablesMasq(this.node.podCidr);
      } catch (err) {
        this.log.warn({ err }, 'removing the iptables masquerade rules failed');
      }
      this.iptables = false;
    }
  }

  status(): MasqStatus {
    const st = this.watcher?.state;
    return {
      mode: this.mode === 'bpf' ? 'BPF' : this.mode === 'iptables' ? 'iptables' : 'Disabled',
      devices: this.mode === 'off' ? [] : this.cfg.interfaces.length === 0 ? [this.node.nativeDev] : this.cfg.interfaces,
      'native-routing-cidr': this.cfg.nativeRoutingCidr ?? null,
      'port-range': `${this.cfg.portMin}-${this.cfg.portMax}`,
      'node-ephemeral-range': this.ephemeral,
      'ip-masq-agent': st ? { enabled: true, ...st } : { enabled: false },
    };
  }

  private applyNonMasq(dp: MasqDatapath, cidrs: string[]): void {
    this.nonMasq = cidrs;
    if (this.mode === 'bpf') {
      const r = dp.ipmasqReplace(cidrs);
      this.log.info({ cidrs, ...r }, 'ip-masq-agent non-masquerade set applied');
    } else if (this.iptables) {
      this.installIptables();
    }
  }

  private installIptables(): void {
    installIptablesMasq({
      podCidr: this.node.podCidr,
      devices: this.cfg.interfaces.length > 0 ? this.cfg.interfaces : [this.node.nativeDev],
      exclude: [...(this.cfg.nativeRoutingCidr ? [this.cfg.nativeRoutingCidr] : []), ...this.nonMasq],
    });
    this.iptables = true;
  }
}
