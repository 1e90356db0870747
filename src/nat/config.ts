// Masquerading flags, Cilium's names: --enable-ipv4-masquerade, --enable-bpf-masquerade, --ipv4-native-routing-cidr,
// --masquerade-interfaces, --enable-ip-masq-agent, --ip-masq-agent-config-path, and the SNAT port range.
import { formatCidr, parseCidr } from '../util/ip.js';
import { NatError } from './errors.js';

export const DEFAULT_IPMASQ_CONFIG_PATH = '/etc/tendril/ip-masq-agent.yaml';
/** The SNAT port range by default: Linux's default ephemeral range (the node's own moves out of it, see ports.ts). */
export const DEFAULT_PORT_RANGE = { min: 32768, max: 60999 } as const;

export interface MasqConfig {
  /** Pod traffic to the world leaves with the node's address (--enable-ipv4-masquerade, default true). */
  ipv4Masquerade: boolean;
  /** In BPF on the native device (--enable-bpf-masquerade, default true); false: iptables MASQUERADE. */
  bpfMasquerade: boolean;
  /** Destinations never masqueraded (--ipv4-native-routing-cidr). */
  nativeRoutingCidr: string | undefined;
  /** Devices masqueraded on (--masquerade-interfaces); empty: the native device. */
  interfaces: string[];
  /** The non-masquerade CIDRs of an ip-masq-agent config file (--enable-ip-masq-agent, default false). */
  ipMasqAgent: boolean;
  ipMasqAgentConfigPath: string;
  /** Ports of translated flows, inclusive (--masquerade-port-range, default 32768-60999). */
  portMin: number;
  portMax: number;
}

function bool(v: string | boolean | undefined, flag: string, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v === 'boolean') return v;
  if (v === 'true') return true;
  if (v === 'false') return false;
  throw new NatError('TENDRIL_ERR_NAT_CONFIG', `Invalid ${flag} "${v}": expected true or false`);
}

export function masqConfig(o: {
  enableIpv4Masquerade?: string | boolean | undefined;
  enableBpfMasquerade?: string | boolean | undefined;
  ipv4NativeRoutingCidr?: string | undefined;
  masqueradeInterfaces?: string | undefined;
  enableIpMasqAgent?: string | boolean | undefined;
  ipMasqAgentConfigPath?: string | undefined;
  masqueradePortRange?: string | undefined;
}): MasqConfig {
  let nativeRoutingCidr: string | undefined;
  if (o.ipv4NativeRoutingCidr !== undefined && o.ipv4NativeRoutingCidr !== '') {
    try {
      nativeRoutingCidr = formatCidr(parseCidr(o.ipv4NativeRoutingCidr));
    } catch (err) {
      throw new NatError('TENDRIL_ERR_NAT_CONFIG', `Invalid --ipv4-native-routing-cidr: ${(err as Error).message}`);
    }
  }
  const interfaces = (o.masqueradeInterfaces ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
  for (const i of interfaces) {
    if (!/^[A-Za-z0-9_.:-]{1,15}$/.test(i)) throw new NatError('TENDRIL_ERR_NAT_CONFIG', `Invalid --masquerade-interfaces: "${i}" is no interface name`);
  }
  let portMin: number = DEFAULT_PORT_RANGE.min;
  let portMax: number = DEFAULT_PORT_RANGE.max;
  if (o.masqueradePortRange !== undefined) {
    const m = /^(\d{1,5})-(\d{1,5})$/.exec(o.masqueradePortRange.trim());
    portMin = m ? Number(m[1]) : NaN;
    portMax = m ? Number(m[2]) : NaN;
    if (!m || portMin < 1024 || portMax > 65535 || portMin > portMax) {
      throw new NatError('TENDRIL_ERR_NAT_CONFIG', `Invalid --masquerade-port-range "${o.masqueradePortRange}": expected LOW-HIGH within 1024-65535`);
    }
  }
  const ipMasqAgentConfigPath = o.ipMasqAgentConfigPath ?? DEFAULT_IPMASQ_CONFIG_PATH;
  if (ipMasqAgentConfigPath === '') throw new NatError('TENDRIL_ERR_NAT_CONFIG', 'Invalid --ip-masq-agent-config-path: empty');
  return {
    ipv4Masquerade: bool(o.enableIpv4Masquerade, '--enable-ipv4-masquerade', true),
    bpfMasquerade: bool(o.enableBpfMasquerade, '--enable-bpf-masquerade', true),
    nativeRoutingCidr,
    interfaces,
    ipMasqAgent: bool(o.enableIpMasqAgent, '--enable-ip-masq-agent', false),
    ipMasqAgentConfigPath,
    portMin,
    portMax,
  };
}

/** How a node masquerades: 'bpf' (on the native device, or the --masquerade-interfaces), 'iptables' (fallback) or 'off'. */
export function masqMode(c: MasqConfig, nativeDev: string): 'bpf' | 'iptables' | 'off' {
  if (!c.ipv4Masquerade) return 'off';
  if (!c.bpfMasquerade) return 'iptables';
  // BPF masquerade runs on every listed device (the native one by default; src/datapath attaches the others).
  void nativeDev;
  return 'bpf';
}
