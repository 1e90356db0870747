// The fallback of --enable-bpf-masquerade=false: iptables MASQUERADE in the node's namespace, in a chain of ours
// (TENDRIL_MASQ, jumped to from POSTROUTING for the node's pod CIDR), rebuilt whole on every change, removed on stop.
import { execFileSync } from 'node:child_process';
import { NatError } from './errors.js';

export const MASQ_CHAIN = 'TENDRIL_MASQ';

export interface IptablesMasqSpec {
  podCidr: string;
  /** Devices traffic is masqueraded on. */
  devices: string[];
  /** Destinations that keep the pod's address (native-routing CIDR, the node's pod CIDR, the ip-masq-agent's set). */
  exclude: string[];
}

function ipt(args: string[], allowFail = false): boolean {
  try {
    execFileSync('iptables', ['-w', '5', '-t', 'nat', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    return true;
  } catch (err) {
    if (allowFail) return false;
    const stderr = String((err as { stderr?: Buffer }).stderr ?? '').trim();
    throw new NatError('TENDRIL_ERR_NAT_IPTABLES', `iptables -t nat ${args.join(' ')} failed: ${stderr || (err as Error).message}`, { cause: err });
  }
}

/** The rules of the chain for `s`, as iptables arguments (-A MASQ_CHAIN …). */
export function masqRules(s: IptablesMasqSpec): string[][] {
  const rules = [...new Set([s.podCidr, ...s.exclude])].map((c) => ['-A', MASQ_CHAIN, '-d', c, '-j', 'RETURN']);
  for (const d of s.devices) rules.push(['-A', MASQ_CHAIN, '-o', d, '-j', 'MASQUERADE']);
  return rules;
}

const jump = (podCidr: string): string[] => ['POSTROUTING', '-s', podCidr, '-m', 'comment', '--comment', 'tendril: masquerade pod traffic', '-j', MASQ_CHAIN];

/** Installs (or rebuilds) the chain and the jump to it. */
export function installIptablesMasq(s: IptablesMasqSpec): void {
  ipt(['-N', MASQ_CHAIN], true);
  ipt(['-F', MASQ_CHAIN]);
  for (const r of masqRules(s)) ipt(r);
  if (!ipt(['-C', ...jump(s.podCidr)], true)) ipt(['-A', ...jump(s.podCidr)]);
}

/** Removes the jump and the chain; nothing there is fine. */
export function removeIptablesMasq(podCidr: string): void {
  while (ipt(['-D', ...jump(podCidr)], true));
  ipt(['-F', MASQ_CHAIN], true);
  ipt(['-X', MASQ_CHAIN], true);
}
