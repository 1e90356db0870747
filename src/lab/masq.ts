// The lab's ip-masq-agent files: one per node (<labdir>/nodes/<n>/ip-masq-agent/config, in a directory of its own as
// the ConfigMap mount of ip-masq-agent, so a watcher of the directory sees nothing but it), handed to its agent with
// --enable-ip-masq-agent; the agents re-read them when they change, so `lab masq set` needs no restart.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { formatCidr, parseCidr } from '../util/ip.js';
import { LabError } from './errors.js';
import { CLI_JS, labPaths } from './paths.js';

export interface LabMasq {
  /** Destinations pod traffic keeps its pod source address towards (ip-masq-agent's nonMasqueradeCIDRs). */
  nonMasqueradeCidrs: string[];
  masqLinkLocal: boolean;
}

export function masqFile(lab: string, node: string): string {
  return path.join(labPaths(lab).node(node).dir, 'ip-masq-agent', 'config');
}

/** Normalised CIDRs ("10.0.1.7/16" becomes 10.0.0.0/16), each once; a bad one names itself and the flag. */
export function parseMasqCidrs(list: string[], flag = '--non-masquerade-cidr'): string[] {
  const out: string[] = [];
  for (const text of list) {
    let c: string;
    try {
      c = formatCidr(parseCidr(text.trim()));
    } catch (err) {
      throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid ${flag} "${text}": ${(err as Error).message}`);
    }
    if (!out.includes(c)) out.push(c);
  }
  return out;
}

/** The file as ip-masq-agent's ConfigMap has it (YAML; an empty list means the agent's defaults). */
export function masqYaml(m: LabMasq): string {
  const cidrs = m.nonMasqueradeCidrs.length ? `\n${m.nonMasqueradeCidrs.map((c) => `- ${c}`).join('\n')}` : ' []';
  return `nonMasqueradeCIDRs:${cidrs}\nmasqLinkLocal: ${m.masqLinkLocal}\n`;
}

/** Writes one node's file whole (a temporary file renamed over it: a reader never sees half of it). */
export function writeMasqFile(lab: string, node: string, m: LabMasq): string {
  const file = masqFile(lab, node);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, masqYaml(m), { mode: 0o644 });
  fs.renameSync(tmp, file);
  return file;
}

let supported: boolean | undefined;

/** Whether this build's agent takes the ip-masq-agent flags (it does once BPF masquerading is in). */
export function agentHasIpMasqAgent(): boolean {
  if (supported === undefined) {
    const r = spawnSync(process.execPath, [CLI_JS, 'agent', '--help'], { encoding: 'utf8', timeout: 30_000 });
    supported = (r.stdout ?? '').includes('--ip-masq-agent-config-path');
  }
  return supported;
}

/** Refuses a non-masquerade set the agent could not apply (before anything is made). */
export function requireIpMasqAgent(): void {
  if (!agentHasIpMasqAgent()) {
    throw new LabError('TENDRIL_ERR_LAB_INVALID', 'This build\'s agent has no --enable-ip-masq-agent: a non-masquerade set cannot be applied');
  }
}

/** Extra agent arguments of a node: the ip-masq-agent flags when the lab has a non-masquerade set. */
export function masqAgentArgs(lab: string, node: string, m: LabMasq | undefined): string[] {
  if (!m) return [];
  requireIpMasqAgent();
  return ['--enable-ip-masq-agent', 'true', '--ip-masq-agent-config-path', masqFile(lab, node)];
}
