// Option helpers shared by the command files.
import type { Command } from 'commander';
import { DEFAULT_LAB } from '../lab/lab.js';

/** The lab a `lab …` command is for: its own --name, else the global --lab, else the default lab. */
export function labName(cmd: Command): string {
  const o = cmd.optsWithGlobals<{ name?: string; lab?: string }>();
  return o.name ?? o.lab ?? DEFAULT_LAB;
}

/** commander's reducer for a repeatable option: every value, in order. */
export function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}
