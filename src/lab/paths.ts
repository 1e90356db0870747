// Names and paths of everything a lab creates, all derived from the lab name (what `lab down` removes is what the
// lab recorded in its ledger, owned.ts).
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const LAB_ROOT = '/var/run/tendril/lab';
export const BPF_LAB_ROOT = '/sys/fs/bpf/tendril';
export const NETNS_DIR = '/var/run/netns';
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const CLI_JS = path.join(REPO_ROOT, 'dist/src/cli/main.js');
export const WEBPOD_JS = path.join(REPO_ROOT, 'dist/src/lab/webpod.js');
export const CNI_BIN_DIR = path.join(REPO_ROOT, 'bin');

/** Node names as in the seed: the control node `ctr`, then workers `w1`, `w2`, … */
export function nodeNames(count: number): string[] {
  return Array.from({ length: count }, (_, i) => (i === 0 ? 'ctr' : `w${i}`));
}

export function labPaths(lab: string) {
  const dir = path.join(LAB_ROOT, lab);
  const prefix = `tdl-${lab}-`;
  return {
    dir,
    stateFile: path.join(dir, 'lab.json'),
    ownedFile: path.join(dir, 'owned'),
    netnsPrefix: prefix,
    underlayNetns: `${prefix}underlay`,
    storeSocket: path.join(dir, 'store.sock'),
    operatorSocket: path.join(dir, 'operator.sock'),
    operatorLog: path.join(dir, 'operator.log'),
    bpfDir: path.join(BPF_LAB_ROOT, `lab-${lab}`),
    node(name: string) {
      const nodeDir = path.join(dir, 'nodes', name);
      return {
        dir: nodeDir,
        netns: `${prefix}${name}`,
        healthNetns: `${prefix}${name}-health`,
        stateDir: path.join(nodeDir, 'state'),
        socket: path.join(nodeDir, 'tendril.sock'),
        cniConfDir: path.join(nodeDir, 'net.d'),
        logFile: path.join(nodeDir, 'agent.log'),
        bpfRoot: path.join(BPF_LAB_ROOT, `lab-${lab}`, name),
        underlayIf: `u-${name}`.slice(0, 15),
      };
    },
    pod(namespace: string, name: string) {
      // "_" is in neither a namespace nor a pod name: default/a-b and default-a/b get different names.
      return {
        netns: `${prefix}pod-${namespace}_${name}`,
        logFile: path.join(dir, 'pods', `${namespace}_${name}.log`),
      };
    },
  };
}

export function netnsPath(name: string): string {
  return path.join(NETNS_DIR, name);
}

/** A lab name becomes part of interface-free names (netns, dirs): keep it short and plain. */
export function validLabName(name: string): boolean {
  return /^[a-z0-9][a-z0-9-]{0,19}$/.test(name);
}
