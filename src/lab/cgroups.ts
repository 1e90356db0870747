// The lab's cgroups for socket-level LB (lab up --socket-lb): a cgroup v2 directory per node under a lab-unique
// parent (<cgroup2 mount>/tendril-<lab>/<node>), a child per pod (<node>/pod-<namespace>_<name>). The node's agent
// attaches the sock programs to its node's cgroup; lab processes of a node (node exec, pod exec, pod servers, the
// agent) are started inside it. Never the machine's root cgroup. A registry of symlinks netns -> cgroup lets
// spawnInNetns/execIn find the cgroup of a namespace by its name alone.
import fs from 'node:fs';
import path from 'node:path';
import { isCgroup2 } from '../kernel/bpf/index.js';
import { LabError } from './errors.js';

/** netns name -> cgroup directory, as symlinks (shared by every lab: netns names are unique per lab). */
export const CGROUP_REGISTRY = '/var/run/tendril/lab-cgroups';

/** The cgroup v2 mount: the unified hierarchy (/sys/fs/cgroup on a cgroup2-only host, .../unified on hybrid). */
export function cgroup2Root(): string {
  for (const dir of ['/sys/fs/cgroup', '/sys/fs/cgroup/unified']) if (isCgroup2(dir)) return dir;
  throw new LabError('TENDRIL_ERR_LAB_INVALID', 'Socket LB needs a cgroup v2 hierarchy (none at /sys/fs/cgroup or /sys/fs/cgroup/unified)');
}

export function labCgroup(lab: string): string {
  return path.join(cgroup2Root(), `tendril-${lab}`);
}

export function nodeCgroup(lab: string, node: string): string {
  return path.join(labCgroup(lab), node);
}

/** Creates (idempotent) the cgroup of `node` and registers `netns` as living in it. */
export function ensureNodeCgroup(lab: string, node: string, netns: string): string {
  const dir = nodeCgroup(lab, node);
  fs.mkdirSync(dir, { recursive: true });
  register(netns, dir);
  return dir;
}

/** Creates the child cgroup of a pod below its node's and registers the pod's netns in it. */
export function ensurePodCgroup(lab: string, node: string, podKey: string, netns: string): string {
  const dir = path.join(nodeCgroup(lab, node), `pod-${podKey}`);
  fs.mkdirSync(dir, { recursive: true });
  register(netns, dir);
  return dir;
}

function register(netns: string, dir: string): void {
  fs.mkdirSync(CGROUP_REGISTRY, { recursive: true });
  const link = path.join(CGROUP_REGISTRY, netns);
  fs.rmSync(link, { force: true });
  fs.symlinkSync(dir, link);
}

/** The cgroup processes of `netns` are started in, or undefined (socket LB off, or not a lab namespace). */
export function cgroupOfNetns(netns: string): string | undefined {
  try {
    const dir = fs.readlinkSync(path.join(CGROUP_REGISTRY, netns));
    return fs.existsSync(path.join(dir, 'cgroup.procs')) ? dir : undefined;
  } catch {
    return undefined;
  }
}

/**
 * argv that runs `argv` inside netns `ns`, and inside its cgroup when it has one: a shell moves itself into the
 * cgroup, then execs nsenter (so the command and all it forks start there).
 */
export function inNetnsArgv(nsPath: string, ns: string, argv: string[]): [string, string[]] {
  const cg = cgroupOfNetns(ns);
  if (!cg) return ['nsenter', [`--net=${nsPath}`, '--', ...argv]];
  return ['sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cg, 'nsenter', `--net=${nsPath}`, '--', ...argv]];
}

/** Removes a pod's cgroup (its processes must be gone) and its registry entry. */
export function removeNetnsCgroup(netns: string): void {
  const cg = cgroupOfNetns(netns);
  fs.rmSync(path.join(CGROUP_REGISTRY, netns), { force: true });
  if (cg) rmdirQuietly(cg);
}

/** PIDs still inside the lab's cgroups (lab down ends them before the directories go). */
export function labCgroupPids(lab: string): number[] {
  const out: number[] = [];
  const walk = (dir: string): void => {
    try {
      for (const l of fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n')) if (l.trim()) out.push(Number(l));
      for (const e of fs.readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(dir, e.name));
    } catch {
      // gone
    }
  };
  try {
    walk(labCgroup(lab));
  } catch {
    // no cgroup v2 here: nothing was made
  }
  return out;
}

/** Removes the lab's cgroups (children first) and their registry entries; returns the directories removed. */
export function removeLabCgroups(lab: string, namespaces: string[]): string[] {
  for (const ns of namespaces) fs.rmSync(path.join(CGROUP_REGISTRY, ns), { force: true });
  let root: string;
  try {
    root = labCgroup(lab);
  } catch {
    return [];
  }
  if (!fs.existsSync(root)) return [];
  const removed: string[] = [];
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(dir, e.name));
    if (rmdirQuietly(dir)) removed.push(dir);
  };
  walk(root);
  try {
    fs.rmdirSync(CGROUP_REGISTRY);
  } catch {
    // other labs still register namespaces
  }
  return removed;
}

function rmdirQuietly(dir: string): boolean {
  try {
    fs.rmdirSync(dir);
    return true;
  } catch {
    return false;
  }
}
