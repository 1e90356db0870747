// IPAM bench (run once, as root): CNI ADD latency per IPAM mode on a one-node lab (bin/tendril-cni timed by
// bench/tools/cnirun as bench/cni.ts does), and the time from a node's exhaustion to its first pod on a new CIDR
// with the operator up (--ipam-pre-allocate 0: the node asks only when its last address is gone), in cluster-pool
// and for a multi-pool TendrilPodIPPool chunk.
//   sudo node dist/bench/ipam.js [--pods N]
import os from 'node:os';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { labDown, labUp, podAdd } from '../src/lab/lab.js';
import { REPO_ROOT } from '../src/lab/paths.js';
import { labPoolAdd } from '../src/lab/pools.js';
import { POD_IP_POOL_ANNOTATION } from '../src/store/index.js';
import { cniLatency, tendrilTarget } from './cni.js';
import { BenchNetns } from './netns.js';

function pct(ms: number[], p: number): number {
  const s = [...ms].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] ?? NaN;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { pods: { type: 'string', default: '40' } } });
  const pods = Number(values.pods);
  const cnirun = path.join(REPO_ROOT, 'build/bench/cnirun');
  const nets = new BenchNetns(`tdlb-${process.pid}-`);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tdl-ipam-bench-'));
  const tag = process.pid % 10000;
  const lines: string[] = [];
  try {
    for (const mode of ['cluster-pool', 'kubernetes', 'multi-pool'] as const) {
      const lab = `bi${tag}${mode[0]}`;
      await labDown(lab);
      try {
        await labUp({ name: lab, nodes: 1, podCidr: '172.23.0.0/22', ipam: { mode, maskSize: 24 } });
        // multi-pool: pods of the default pool, then of a TendrilPodIPPool (annotation ipam.tendril.io/ip-pool=blue).
        const runs: Array<[string, ReturnType<typeof tendrilTarget>]> = [[mode, tendrilTarget(lab)]];
        if (mode === 'multi-pool') {
          await labPoolAdd(lab, 'blue', ['10.93.0.0/22'], 24);
          const t = tendrilTarget(lab);
          runs.push(['multi-pool (pool blue)', { ...t, config: (pod, prev) => t.config({ ...pod, annotations: { [POD_IP_POOL_ANNOTATION]: 'blue' } }, prev) }]);
        }
        for (const [label, target] of runs) {
          const [add, del] = await cniLatency(cnirun, nets, target, pods, 1, tmp);
          lines.push(`${label.padEnd(12)} ADD p50 ${pct(add.ms, 50).toFixed(1)} ms p99 ${pct(add.ms, 99).toFixed(1)} ms; DEL p50 ${pct(del.ms, 50).toFixed(1)} ms (${pods} pods, sequential, ${add.failures + del.failures} failed)`);
          process.stderr.write(lines.at(-1) + '\n');
        }
      } finally {
        await labDown(lab);
      }
    }
    const lab = `bi${tag}g`;
    await labDown(lab);
    try {
      await labUp({ name: lab, nodes: 1, podCidr: '172.23.0.0/24', ipam: { maskSize: 28, preAllocate: 0 } });
      for (let i = 0; i < 12; i++) await podAdd(lab, `f${i}`, { node: 'ctr' }); // the /28 is full after these
      const t0 = performance.now();
      let tries = 0;
      for (;;) {
        tries++;
        try {
          const p = await podAdd(lab, `g${tries}`, { node: 'ctr' });
          lines.push(`growth       exhaustion -> first pod on the new CIDR (${p.ip}) ${(performance.now() - t0).toFixed(0)} ms, ${tries} ADD(s) (failures answered code 100 at once)`);
          break;
        } catch (err) {
          if (!/code 100/.test((err as Error).message) || performance.now() - t0 > 60_000) throw err;
        }
      }
      process.stderr.write(lines.at(-1) + '\n');
    } finally {
      await labDown(lab);
    }
    // multi-pool: the node's chunk of a pool is full (/28: 14 pods; pre-allocate 0 asks only then); the next ADD of
    // that pool asks for another chunk and waits for it: its duration is exhaustion -> first pod on the new CIDR.
    const mp = `bi${tag}p`;
    await labDown(mp);
    try {
      await labUp({ name: mp, nodes: 1, podCidr: '172.23.0.0/24', ipam: { mode: 'multi-pool', maskSize: 26, preAllocate: 0 } });
      await labPoolAdd(mp, 'small', ['10.94.0.0/24'], 28);
      const annotations = { [POD_IP_POOL_ANNOTATION]: 'small' };
      for (let i = 0; i < 14; i++) await podAdd(mp, `s${i}`, { node: 'ctr', annotations });
      const t0 = performance.now();
      const p = await podAdd(mp, 'next', { node: 'ctr', annotations });
      lines.push(`multi-pool growth: chunk of pool "small" full -> first pod on its next chunk (${p.ip}) ${(performance.now() - t0).toFixed(0)} ms (one ADD that waits for the grant)`);
      process.stderr.write(lines.at(-1) + '\n');
    } finally {
      await labDown(mp);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  process.stdout.write(lines.join('\n') + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`ipam bench failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
