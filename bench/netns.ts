// The bench's own network namespaces: every name carries the run-unique prefix, and removal finds them all by it.
import fs from 'node:fs';
import { NETNS_DIR } from '../src/lab/paths.js';
import { BenchError, run } from './proc.js';

export class BenchNetns {
  /** e.g. "tdlb-4242-": nothing without it is ever created or deleted here. */
  readonly prefix: string;

  constructor(prefix: string) {
    if (!/^tdlb-\d+-$/.test(prefix)) throw new BenchError(`Invalid bench netns prefix "${prefix}": expected tdlb-<pid>-`);
    this.prefix = prefix;
  }

  name(suffix: string): string {
    return this.prefix + suffix;
  }

  /** Creates one namespace with lo up; returns its full name. */
  add(suffix: string): string {
    const ns = this.name(suffix);
    run(['ip', 'netns', 'add', ns]);
    run(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
    return ns;
  }

  /**
   * Creates many namespaces with one `ip -batch` (the runtime's sandbox step, untimed and not what we measure).
   * lo stays down, as a runtime leaves it before its loopback plugin runs.
   */
  addMany(suffixes: string[]): string[] {
    const names = suffixes.map((s) => this.name(s));
    if (names.length) run(['ip', '-batch', '-'], { input: names.map((n) => `netns add ${n}\n`).join(''), timeoutMs: 120_000 });
    return names;
  }

  /** Deletes the given namespaces of this run (their veth ends go with them). */
  delMany(names: string[]): void {
    const ours = names.filter((n) => n.startsWith(this.prefix));
    if (ours.length) run(['ip', '-force', '-batch', '-'], { input: ours.map((n) => `netns del ${n}\n`).join(''), timeoutMs: 120_000, allowFail: true });
  }

  /** Every namespace of this run that still exists. */
  list(): string[] {
    try {
      return fs.readdirSync(NETNS_DIR).filter((n) => n.startsWith(this.prefix));
    } catch {
      return [];
    }
  }

  delAll(): string[] {
    const left = this.list();
    this.delMany(left);
    return left;
  }
}
