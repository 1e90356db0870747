// `npm run bench`: Tendril's same-node and cross-node datapath, forwarding while flows are observed, policy cost and latency, and CNI latency against plain-kernel baselines, in one run.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { labDown } from '../src/lab/lab.js';
import { CLI_JS, CNI_BIN_DIR, REPO_ROOT } from '../src/lab/paths.js';
import { cniLatency, ptpTarget, tendrilTarget, type CniOp } from './cni.js';
import { checkConnectivity, iperf, rr, rrSummary, waitQuiet } from './load.js';
import { NOISY_PCT, QUIET_BUSY_PCT, measure, noisePolicy } from './measure.js';
import { BenchNetns } from './netns.js';
import { DEFAULT_RATES, observePhase, parseRates } from './observe.js';
import { policyBpfRoot, policyPhase, removeBpfRoot, type PolicyResult } from './policy.js';
import { lbPhase, lbReport } from './lb.js';
import { l7Phase, l7Report } from './l7.js';
import { podStartPhase } from './k8s-podstart.js';
import { k8sMemory, k8sMemoryTable } from './k8s-memory.js';
import { BenchError, killAll, run } from './proc.js';
import {
  OBSERVE_ORDER,
  POLICY_ORDER,
  XNODE_ORDER,
  cniConcTable,
  cniTable,
  dpOneCpuTable,
  dpRows,
  dpSamplesTable,
  dpSpreadTable,
  dpTable,
  followSamplesTable,
  observeTable,
  observeVerdicts,
  policyLatencyTable,
  policyTable,
  policyVerdicts,
  rateSummary,
  rateTable,
  targetVerdicts,
  unfollowedTable,
  xnodeTable,
  xnodeVerdicts,
  type DpRow,
  type DpSample,
  type FollowCount,
  type Measured,
  type RateLevel,
} from './report.js';
import { REF_CNI_DIR, setupRefPair, setupTendril, setupVeth, type Pair } from './scenarios.js';
import { setupTendrilXnode, setupXBaseline, xBaselineNetns, xBaselinePlan } from './xnode.js';
import { checkSameShape, checkSeenAs, masqRounds, setupRefMasq, setupTendrilMasq, refMasqPlan, type MasqPair } from './masq.js';
import { masqRows, masqSamplesTable, masqTable, masqVerdicts, type MasqSample } from './masq-report.js';

const USAGE = `usage: node dist/bench/run.js [--quick] [--rounds N] [--secs S] [--pods N] [--conc C] [--observe-rates LIST]
                                  [--policy-endpoints N] [--no-datapath] [--no-observe] [--no-policy] [--no-xnode] [--no-masq] [--no-cni] [--no-lb] [--no-k8s] [--no-k8s-memory]
                                  [--lb-services N]
  default: 10 s tests, 3 interleaved rounds; same-node datapath; same-node with \`tendril observe -f\` vs idle and
  the event rate the agent decodes and serves; same-node with 0 vs 10,000 policy entries and the time from a
  policy change to enforcement on a node of 1,000 endpoints (100 changes); cross-node (tunnel, native) datapath;
  pod -> external host through BPF masquerade vs ptp + iptables MASQUERADE vs routed;
  CNI latency for 100 pods sequentially and 200 pods at concurrency 8
  --quick: 3 s tests, 1 round, 20 pods / 40 at concurrency 8, 20 policy changes (smoke run, ~5 min)
  --observe-rates: offered connections/s of the event-rate ladder, ascending, "max" last (default ${DEFAULT_RATES.map((r) => r || 'max').join(',')})
  --policy-endpoints: endpoints of the policy-latency node (default 1000, at most 2000: the node has a /21)
  --no-datapath skips the same-node datapath, --no-observe the flows phase, --no-policy the policy phase, --no-xnode the cross-node one, --no-masq the masquerade one,
  --no-cni the CNI latency, --no-lb the services phase (pod -> ClusterIP vs pod -> backend, 1 vs 10,000 services),
  --no-l7 the L7 phase (HTTP through the node proxy vs an L4-only allow, cross node); --only-l7 runs nothing else,
  --no-k8s the pod-start phase (50 pods at once on the kit's kubelet node, Tendril vs bridge; needs TENDRIL_K8S_KIT),
  --no-k8s-memory the Kubernetes-mode agent memory phase (1,000 pods, 200 NetworkPolicies; needs TENDRIL_K8S_KIT),
  --lb-services: services of the services phase's second half and of its iptables baseline (default 10000; --quick 2000)`;

const BENCH_TOOLS = path.join(REPO_ROOT, 'build/bench');

interface Options {
  secs: number;
  rounds: number;
  pods: number;
  conc: number;
  datapath: boolean;
  xnode: boolean;
  masq: boolean;
  cni: boolean;
  lb: boolean;
  l7: boolean;
  /** Pod start on the kit's kubelet node (TENDRIL_K8S_KIT), Tendril vs bridge, 50 pods at once. */
  k8s: boolean;
  k8sMemory: boolean;
  lbServices: number;
  observe: boolean;
  rates: number[];
  policy: boolean;
  policyEndpoints: number;
  policyChanges: number;
  quick: boolean;
}

function options(): Options {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      rounds: { type: 'string' },
      secs: { type: 'string' },
      pods: { type: 'string' },
      conc: { type: 'string' },
      'no-datapath': { type: 'boolean', default: false },
      'no-xnode': { type: 'boolean', default: false },
      'no-masq': { type: 'boolean', default: false },
      'no-cni': { type: 'boolean', default: false },
      'no-lb': { type: 'boolean', default: false },
      'no-l7': { type: 'boolean', default: false },
      'only-l7': { type: 'boolean', default: false },
      'no-k8s': { type: 'boolean', default: false },
      'no-k8s-memory': { type: 'boolean', default: false },
      'lb-services': { type: 'string' },
      'no-observe': { type: 'boolean', default: false },
      'no-policy': { type: 'boolean', default: false },
      'policy-endpoints': { type: 'string' },
      'observe-rates': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    process.exit(0);
  }
  const int = (v: string | undefined, dflt: number, flag: string, min: number): number => {
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new BenchError(`Invalid --${flag} "${v}": expected an integer >= ${min}`);
    return n;
  };
  const q = values.quick ?? false;
  const only = values['only-l7'] ?? false;
  const policyEndpoints = int(values['policy-endpoints'], 1000, 'policy-endpoints', 1);
  if (policyEndpoints > 2000) throw new BenchError(`Invalid --policy-endpoints "${policyEndpoints}": at most 2000 (the node's pod CIDR is a /21)`);
  return {
    quick: q,
    secs: int(values.secs, q ? 3 : 10, 'secs', 1),
    rounds: int(values.rounds, q ? 1 : 3, 'rounds', 1),
    pods: int(values.pods, q ? 20 : 100, 'pods', 1),
    conc: int(values.conc, 8, 'conc', 1),
    datapath: !only && !values['no-datapath'],
    xnode: !only && !values['no-xnode'],
    masq: !only && !values['no-masq'],
    cni: !only && !values['no-cni'],
    lb: !only && !values['no-lb'],
    l7: !values['no-l7'],
    observe: !only && !values['no-observe'],
    k8s: !only && !values['no-k8s'],
    k8sMemory: !only && !values['no-k8s-memory'],
    lbServices: int(values['lb-services'], q ? 2000 : 10_000, 'lb-services', 1001),
    rates: values['observe-rates'] === undefined ? [...DEFAULT_RATES] : parseRates(values['observe-rates']),
    policy: !only && !values['no-policy'],
    policyEndpoints,
    policyChanges: q ? 20 : 100,
  };
}

function say(line: string): void {
  process.stderr.write(`[${new Date().toTimeString().slice(0, 8)}] ${line}\n`);
}

/** Fails loudly on anything missing: a bench that cannot run must not print a half table. */
function checkPrerequisites(): void {
  if (process.getuid?.() !== 0) throw new BenchError('The bench needs root (network namespaces, BPF): run it with sudo');
  const missing: string[] = [];
  for (const cmd of ['ip', 'ss', 'nsenter', 'sysctl', 'taskset', 'nice', 'ping', 'iperf3', 'make', 'gcc']) {
    if (run(['sh', '-c', `command -v ${cmd}`], { allowFail: true }).status !== 0) missing.push(cmd);
  }
  for (const f of [path.join(REF_CNI_DIR, 'bridge'), path.join(REF_CNI_DIR, 'ptp'), path.join(REF_CNI_DIR, 'host-local'), path.join(CNI_BIN_DIR, 'tendril-cni'), CLI_JS]) {
    if (!fs.existsSync(f)) missing.push(f);
  }
  if (missing.length) throw new BenchError(`Missing for the bench: ${missing.join(', ')} (run: npm run setup)`);
}

function header(o: Options): string[] {
  const ver = (argv: string[]) => (run(argv, { allowFail: true }).stdout.split('\n')[0] ?? '').trim() || '?';
  const rev = ver(['git', '-C', REPO_ROOT, 'rev-parse', '--short', 'HEAD']);
  const dirty = run(['git', '-C', REPO_ROOT, 'status', '--porcelain', '--untracked-files=no'], { allowFail: true }).stdout.trim() ? '+dirty' : '';
  return [
    `# Tendril bench ${new Date().toISOString()}`,
    '',
    `- host: Linux ${os.release()}, ${os.cpus().length} CPU (${os.cpus()[0]?.model ?? '?'}), ${Math.round(os.totalmem() / 2 ** 30)} GiB; tendril ${rev}${dirty}; node ${process.version}`,
    `- params: ${o.secs} s per test, ${o.rounds} interleaved round(s) (odd rounds forward, even reversed), iperf3/rr client pinned to CPU0 and server to CPU1 at nice -19; ` +
      `observe: ${o.observe ? `same-node idle vs \`tendril observe -f -o json\` through the lab relay; event rate at ${o.rates.map((r) => r || 'max').join(', ')} conn/s, ${o.secs} s each` : 'skipped'}; ` +
      `policy: ${o.policy ? `same-node 0 vs 10,000 entries on the server endpoint; ${o.policyChanges} changes of each kind on a standalone agent with ${o.policyEndpoints} endpoints` : 'skipped'}; ` +
      `cross-node: ${o.xnode ? 'two-node labs (tunnel, native) against plain kernel VXLAN and routing' : 'skipped'}; ` +
      `masquerade: ${o.masq ? 'pod -> external host, Tendril BPF SNAT vs ptp ipMasq (iptables) vs routed' : 'skipped'}; ` +
      `CNI: ${o.pods} pods sequential, ${2 * o.pods} pods at concurrency ${o.conc}`,
    `- noise: before each test wait until the box is <= ${QUIET_BUSY_PCT} % busy (<= ${o.quick ? 3 : 10} s); a test during which other processes used > ${NOISY_PCT} % of all CPUs ` +
      `is repeated up to ${o.quick ? 0 : 2} times within a ${o.quick ? 15 : 300} s budget per datapath phase and the quietest attempt is kept`,
    `- tools: ${ver(['iperf3', '--version'])}; rr (bench/tools/rr.c, 1-byte TCP request/response); CNI plugins ${ver(['dpkg-query', '-W', '-f', '${Version}', 'containernetworking-plugins'])}`,
    '',
  ];
}

// ---------------------------------------------------------------- cleanup (normal end, failure and signals)

interface RunState {
  nets: BenchNetns;
  lab: string;
  tmpDir: string;
}

let cleaning: Promise<void> | undefined;

/** Every lab a run may bring up: same-node + CNI (tcx), CNI with tc, cross-node tunnel and native. */
function runLabs(st: RunState): { same: string; tc: string; tunnel: string; native: string; masq: string } {
  return { same: st.lab, tc: `${st.lab}t`, tunnel: `${st.lab}u`, native: `${st.lab}n`, masq: `${st.lab}m` };
}

function cleanup(st: RunState): Promise<void> {
  cleaning ??= (async () => {
    killAll();
    const labs = Object.values(runLabs(st));
    for (const lab of labs) {
      try {
        await labDown(lab);
      } catch (err) {
        say(`cleanup: lab down ${lab} failed: ${(err as Error).message}`);
      }
    }
    const gone = st.nets.delAll();
    // The policy phase's standalone agent pins under a directory of its own (its devices went with its netns).
    try {
      removeBpfRoot(policyBpfRoot(process.pid));
    } catch (err) {
      say(`cleanup: ${(err as Error).message}`);
    }
    const left = st.nets.list();
    if (left.length) say(`cleanup: could not delete netns ${left.join(', ')}`);
    else if (gone.length) say(`cleanup: deleted ${gone.length} netns ${st.nets.prefix}*, labs ${labs.join(', ')}`);
    fs.rmSync(st.tmpDir, { recursive: true, force: true });
  })();
  return cleaning;
}

// ---------------------------------------------------------------- phases

/** Measures every pair in interleaved rounds: every scenario once per round, the order reversed every other round. */
async function rounds(pairs: readonly Pair[], o: Options): Promise<DpSample[]> {
  const rrBin = path.join(BENCH_TOOLS, 'rr');
  const noise = noisePolicy(o.quick);
  const pad = Math.max(...pairs.map((p) => p.name.length));
  const samples: DpSample[] = [];
  for (let round = 1; round <= o.rounds; round++) {
    // Interleaved so that drifts hit all scenarios alike.
    const order = round % 2 ? pairs : [...pairs].reverse();
    for (const p of order) {
      const m = <T>(fn: () => Promise<T>) => measure(noise, fn);
      const gbps = await m(() => iperf(p.server, p.client, p.serverIp, o.secs));
      const rrX = await m(async () => rrSummary(await rr(rrBin, p.server, p.client, p.serverIp, o.secs)));
      const rr1 = await m(async () => rrSummary(await rr(rrBin, p.server, p.client, p.serverIp, o.secs, true)));
      samples.push({ round, scenario: p.name, gbps, rr: rrX, rr1 });
      const f = (x: Measured<unknown>) => `${x.foreignPct.toFixed(0)}%${x.attempts > 1 ? ` x${x.attempts}` : ''}`;
      say(
        `round ${round} ${p.name.padEnd(pad)} ${gbps.value.toFixed(2)} Gbit/s (${f(gbps)})  ` +
          `rr ${rrX.value.tps.toFixed(0)}/s ${rrX.value.p50us}/${rrX.value.p99us} µs (${f(rrX)})  ` +
          `rr 1-CPU ${rr1.value.tps.toFixed(0)}/s ${rr1.value.p50us}/${rr1.value.p99us} µs (${f(rr1)})  [foreign load %, attempts]`,
      );
    }
  }
  return samples;
}

async function datapath(st: RunState, o: Options): Promise<{ samples: DpSample[]; pairs: Pair[] }> {
  say('datapath: setting up veth, bridge, ptp, tendril');
  const pairs: Pair[] = [setupVeth(st.nets), setupRefPair(st.nets, 'bridge', st.tmpDir), setupRefPair(st.nets, 'ptp', st.tmpDir), await setupTendril(st.lab)];
  for (const p of pairs) checkConnectivity(p.client, p.serverIp, p.name);
  const samples = await rounds(pairs, o);
  // The reference pairs are done; the lab stays for the observe and CNI phases.
  st.nets.delMany(pairs.filter((p) => p.name !== 'tendril').flatMap((p) => [p.client, p.server, st.nets.name(`${p.name}-node`)]));
  return { samples, pairs };
}

/** Flows: the same-node lab (the datapath phase's, or brought up here) idle vs followed, then the event-rate ladder. */
async function observe(st: RunState, o: Options, labPair: Pair | undefined): Promise<{ samples: DpSample[]; follows: FollowCount[]; levels: RateLevel[]; unfollowed: RateLevel[]; pair: Pair }> {
  let pair = labPair;
  if (!pair) {
    say(`observe: bringing up lab ${st.lab}`);
    pair = await setupTendril(st.lab);
    checkConnectivity(pair.client, pair.serverIp, pair.name);
  }
  say(`observe: lab ${st.lab}, idle vs \`tendril observe -f\` through its relay, then ${o.rates.length} event rates`);
  const r = await observePhase(st.lab, pair, BENCH_TOOLS, { secs: o.secs, rounds: o.rounds, rates: o.rates, noise: noisePolicy(o.quick), say });
  return { ...r, pair };
}

/** Policy: the same-node lab (brought up if no earlier phase did) with 0 vs 10,000 entries, then change latency on a standalone agent. */
async function policy(st: RunState, o: Options, labPair: Pair | undefined): Promise<PolicyResult> {
  let pair = labPair;
  if (!pair) {
    say(`policy: bringing up lab ${st.lab}`);
    pair = await setupTendril(st.lab);
    checkConnectivity(pair.client, pair.serverIp, pair.name);
  }
  say(`policy: lab ${st.lab}, 0 vs 10,000 entries on the server endpoint, then ${o.policyChanges} changes with ${o.policyEndpoints} endpoints`);
  return policyPhase(st.lab, pair, {
    secs: o.secs,
    rounds: o.rounds,
    endpoints: o.policyEndpoints,
    changes: o.policyChanges,
    noise: noisePolicy(o.quick),
    nets: st.nets,
    tmpDir: st.tmpDir,
    toolsDir: BENCH_TOOLS,
    say,
  });
}

/** Cross-node: two-node Tendril labs (tunnel, native) next to plain kernel VXLAN and routing of the same shape. */
async function xnode(st: RunState, o: Options): Promise<{ samples: DpSample[]; pairs: Pair[] }> {
  const labs = runLabs(st);
  say(`xnode: setting up xvxlan, xroute, labs ${labs.tunnel} (tunnel) and ${labs.native} (native), 2 nodes each`);
  const made: Pair[] = [setupXBaseline(st.nets, 'xvxlan'), setupXBaseline(st.nets, 'xroute')];
  made.push(await setupTendrilXnode(labs.tunnel, 'tunnel'), await setupTendrilXnode(labs.native, 'native'));
  const pairs = XNODE_ORDER.map((n) => made.find((p) => p.name === n)!);
  for (const p of pairs) checkConnectivity(p.client, p.serverIp, p.name);
  const samples = await rounds(pairs, o);
  // Torn down now so that two idle labs of agents do not sit next to the CNI phase.
  st.nets.delMany([...xBaselineNetns(xBaselinePlan(st.nets, 'xvxlan')), ...xBaselineNetns(xBaselinePlan(st.nets, 'xroute'))]);
  await labDown(labs.tunnel);
  await labDown(labs.native);
  return { samples, pairs };
}

/** Masquerade: pod -> external host through Tendril's BPF SNAT, ptp + iptables MASQUERADE, and routed without NAT. */
async function masq(st: RunState, o: Options): Promise<{ samples: MasqSample[]; pairs: MasqPair[]; shape: string }> {
  const lab = runLabs(st).masq;
  say(`masq: setting up ptp+ipMasq, routed, lab ${lab} with an external host`);
  const pairs = [...setupRefMasq(st.nets, st.tmpDir), await setupTendrilMasq(lab)];
  for (const p of pairs) {
    checkConnectivity(p.client, p.serverIp, p.name);
    await checkSeenAs(p);
  }
  const shape = checkSameShape(pairs);
  const samples = await masqRounds(pairs, { rrBin: path.join(BENCH_TOOLS, 'rr'), secs: o.secs, rounds: o.rounds, noise: noisePolicy(o.quick), say });
  const plan = refMasqPlan(st.nets);
  st.nets.delMany([plan.underlay, plan.ext, ...plan.nodes.map((n) => n.ns), ...pairs.filter((p) => p.client.startsWith(st.nets.prefix)).map((p) => p.client)]);
  await labDown(lab);
  return { samples, pairs, shape };
}

async function cniPhase(st: RunState, o: Options, labReady: boolean): Promise<CniOp[]> {
  if (!labReady) {
    say(`cni: bringing up lab ${st.lab}`);
    await setupTendril(st.lab);
  }
  const cnirun = path.join(BENCH_TOOLS, 'cnirun');
  const ptp = ptpTarget(st.nets, st.tmpDir);
  const tendril = tendrilTarget(st.lab);
  // The same agent attaching with tc instead of tcx: tcx holds RTNL across an RCU grace period per attach.
  say(`cni: bringing up lab ${st.lab}t (--attach-mode tc)`);
  await setupTendril(`${st.lab}t`, 'tc');
  const tendrilTc = tendrilTarget(`${st.lab}t`, 'tendril-tc');
  const out: CniOp[] = [];
  for (const [pods, conc] of [
    [o.pods, 1],
    [2 * o.pods, o.conc],
  ] as const) {
    for (const t of [ptp, tendril, tendrilTc]) {
      await waitQuiet(QUIET_BUSY_PCT, o.quick ? 3_000 : 10_000);
      const [add, del] = await cniLatency(cnirun, st.nets, t, pods, conc, st.tmpDir);
      out.push(add, del);
      const p50 = (x: CniOp) => [...x.ms].sort((a, b) => a - b)[Math.ceil(x.ms.length / 2) - 1]?.toFixed(2);
      const settled =
        add.settledMs !== undefined
          ? `, all on tcx ${(add.settledMs / 1000).toFixed(2)} s after the last ADD`
          : add.unsettled !== undefined
            ? `, ${add.unsettled} attachment(s) still on tc filters 120 s after the last ADD`
            : '';
      say(`cni ${t.plugin.padEnd(7)} ${pods} pods conc ${conc}: ADD p50 ${p50(add)} ms, DEL p50 ${p50(del)} ms${settled}${add.failures + del.failures ? `, ${add.failures + del.failures} FAILED` : ''}`);
      for (const x of [add, del]) if (x.firstError) say(`  first ${x.op} failure: ${x.firstError}`);
      // The agent's own view of the same calls (its last 256 per verb): where the time goes inside it.
      for (const v of (await t.timings?.()) ?? []) {
        const ph = v.phases.map((p) => `${p.phase} ${p.p50.toFixed(2)}/${p.p99.toFixed(2)}`).join(', ');
        say(`  agent ${v.verb} p50/p99 ms (last ${v.calls}): total ${v.total.p50.toFixed(2)}/${v.total.p99.toFixed(2)}; ${ph}`);
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  const o = options();
  checkPrerequisites();
  run(['make', '-s', '-C', path.join(REPO_ROOT, 'bench')], { timeoutMs: 120_000 });
  const st: RunState = {
    nets: new BenchNetns(`tdlb-${process.pid}-`),
    lab: `b${process.pid}`,
    tmpDir: fs.mkdtempSync(path.join(os.tmpdir(), `tdlb-${process.pid}-`)),
  };
  for (const [sig, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
    ['SIGHUP', 129],
  ] as const) {
    process.on(sig, () => {
      say(`${sig}: cleaning up`);
      void cleanup(st).finally(() => process.exit(code));
    });
  }
  const started = Date.now();
  const head = header(o);
  process.stdout.write(head.join('\n') + '\n');
  const body: string[] = [];
  const emit = (lines: string[]) => {
    body.push(...lines);
    process.stdout.write(lines.join('\n') + '\n');
  };
  let failed = false;
  try {
    let samples: DpSample[] = [];
    let pairs: Pair[] = [];
    if (o.datapath) {
      ({ samples, pairs } = await datapath(st, o));
    }
    const rows = dpRows(samples, ['veth', 'bridge', 'ptp', 'tendril']);
    if (o.datapath) {
      emit([
        `## Same-node pod-to-pod (medians of ${o.rounds} round(s); iperf3 1 stream ${o.secs} s, rr 1-byte TCP_RR ${o.secs} s; client CPU0, server CPU1)`,
        '',
        dpTable(rows),
        '',
        `### Request/response with client and server on CPU0 (no cross-CPU wake-up; ${o.secs} s)`,
        '',
        dpOneCpuTable(rows),
        '',
        '### Spread and noise',
        '',
        dpSpreadTable(rows, samples, NOISY_PCT),
        '',
        ...pairs.map((p) => `- ${p.name}: ${p.desc}`),
        '',
      ]);
    }
    let osamples: DpSample[] = [];
    let orows: DpRow[] = [];
    let labPair = pairs.find((p) => p.name === 'tendril');
    let levels: RateLevel[] = [];
    let follows: FollowCount[] = [];
    if (o.observe) {
      const ob = await observe(st, o, labPair);
      labPair = ob.pair;
      osamples = ob.samples;
      levels = ob.levels;
      follows = ob.follows;
      orows = dpRows(osamples, OBSERVE_ORDER);
      emit([
        `## Flows: same-node pod-to-pod with \`tendril observe -f\` running vs idle (medians of ${o.rounds} round(s); iperf3 1 stream ${o.secs} s, rr 1-byte TCP_RR ${o.secs} s; client CPU0, server CPU1; RR 1-CPU: both on CPU0)`,
        '',
        observeTable(orows, ob.follows),
        '',
        '### Spread and noise',
        '',
        dpSpreadTable(orows, osamples, NOISY_PCT),
        '',
        `- ${OBSERVE_ORDER[0]}: the lab node (agent, its event reader and flow server, the lab relay all running), nobody following flows`,
        `- ${OBSERVE_ORDER[1]}: the same, with \`tendril --lab ${st.lab} observe -f -o json\` (through the relay) started before each test and stopped after it; the bench reads and counts its output`,
        '',
        `## Flows: event rate (short connections pod a -> pod b, ${o.secs} s per rate, while \`observe -f -o json\` follows through the relay)`,
        '',
        rateTable(levels),
        '',
        `- a connection = connect, 1 byte there and back, close (rr -C, ${levels[0]?.clients ?? 2} clients, unpinned); the datapath reports ~10 events for it (SYN, SYN-ACK, ACK, FIN, FIN of the reply, each leaving one pod and entering the other)`,
        '- events/s made = decoded by the agent + lost because the ring was full (the datapath\'s own counter); dropped for follower = the node\'s flow server dropped them for a follower too far behind (lost_events it was sent); not delivered = seen by the flow server but neither received nor reported lost',
        '- the ladder stops after the first rate where the agent lost events or the generator fell short of the offered rate',
        '',
        '### The same short connections, nobody following flows',
        '',
        unfollowedTable(ob.unfollowed),
        '',
        '- agent CPU µs/event = the agent\'s CPU time while the generator ran / events it decoded (its whole process: event reader, flow server, everything else it does meanwhile)',
        '',
      ]);
    }
    let pol: PolicyResult | undefined;
    let prows: DpRow[] = [];
    if (o.policy) {
      pol = await policy(st, o, labPair);
      prows = dpRows(pol.samples, POLICY_ORDER);
      const noPolicy = POLICY_ORDER[0];
      emit([
        `## Policy: same-node pod-to-pod with 0 vs 10,000 policy entries on the server endpoint (medians of ${o.rounds} round(s); iperf3 1 stream ${o.secs} s, rr 1-byte TCP_RR ${o.secs} s; client CPU0, server CPU1; RR 1-CPU: both on CPU0)`,
        '',
        policyTable(prows, pol.entries),
        '',
        '### Spread and noise',
        '',
        dpSpreadTable(prows, pol.samples, NOISY_PCT),
        '',
        `- ${noPolicy}: the lab pair a -> b with no policy (neither endpoint under enforcement)`,
        `- ${POLICY_ORDER[1]}: the same with one TendrilNetworkPolicy selecting b (app=bench-b): ingress from app=bench-a (any port) and from world to 10,000 single TCP ports (every other port from 10000: no two merge into a range), ${pol.entries} map entries (checked before each round); imported before and deleted after its tests, every other round first; agent regeneration on import ${pol.importMs.map((x) => x.toFixed(0)).join(', ')} ms`,
        `- the allow entry of app=bench-a counted ${pol.allowedPackets} packets during the policy rounds`,
        '',
        `## Policy: change to enforcement with ${o.policyEndpoints} endpoints on one node (standalone agent, ${o.policyChanges} changes of each kind)`,
        '',
        policyLatencyTable(pol.latency),
        '',
        `- a standalone agent (no cluster store: identities in memory, tc attach) in its own namespace; ${o.policyEndpoints} endpoints on veth pairs, labels app=app-0..app-49, created in ${pol.setupS.toFixed(1)} s through POST /v1/ipam + PUT /v1/endpoint`,
        '- a change = PUT /v1/policy replacing a TendrilNetworkPolicy with the same one allowing another TCP port from world; the agent answers once the maps are updated, so the round trip is the time to enforcement (after each change, a selected endpoint\'s map is checked for the new port); agent regeneration = its compile + map update time',
        '- the two kinds alternate; 2 changes of each are made first and not counted (the first creates the policy)',
        '',
      ]);
    }
    let xsamples: DpSample[] = [];
    let xrows: DpRow[] = [];
    if (o.xnode) {
      const x = await xnode(st, o);
      xsamples = x.samples;
      xrows = dpRows(xsamples, XNODE_ORDER);
      emit([
        `## Cross-node pod-to-pod (medians of ${o.rounds} round(s); iperf3 1 stream ${o.secs} s, rr 1-byte TCP_RR ${o.secs} s; client CPU0, server CPU1; RR 1-CPU: both on CPU0)`,
        '',
        xnodeTable(xrows),
        '',
        '### Spread and noise',
        '',
        dpSpreadTable(xrows, xsamples, NOISY_PCT),
        '',
        ...x.pairs.map((p) => `- ${p.name}: ${p.desc}`),
        '',
      ]);
    }
    let msamples: MasqSample[] = [];
    if (o.masq) {
      const mq = await masq(st, o);
      msamples = mq.samples;
      emit([
        `## Pod -> external host: masquerading (medians of ${o.rounds} round(s); iperf3 1 stream ${o.secs} s, rr 1-byte TCP_RR ${o.secs} s client CPU0 / server CPU1, TCP_CRR one rr -C client ${o.secs} s unpinned)`,
        '',
        masqTable(masqRows(msamples)),
        '',
        ...mq.pairs.map((p) => `- ${p.name}: ${p.desc}; checked before the rounds: the external host sees the source ${p.seenAs}`),
        `- ${mq.shape}`,
        '',
      ]);
    }
    if (o.l7) {
      say('l7: HTTP client -> server on another node, L7 rule vs L4-only allow');
      emit(l7Report(await l7Phase(`${st.lab}h`, { secs: Math.min(o.secs, 5), rounds: o.rounds, say }), { ...o, secs: Math.min(o.secs, 5) }));
    }
    if (o.lb) {
      say(`lb: pod -> ClusterIP vs pod -> backend, 1 (a twin lab) and ${o.lbServices} services by turns; kube-proxy iptables at ${o.lbServices}; change latency at 1,000`);
      emit(lbReport(await lbPhase(`${st.lab}l`, { secs: o.secs, rounds: o.rounds, toolsDir: BENCH_TOOLS, say, services: o.lbServices, latencySamples: o.quick ? 20 : 50 }), o));
    }
    if (o.k8s) {
      if (!process.env['TENDRIL_K8S_KIT']) say('=== Kubernetes pod-start phase not run: set TENDRIL_K8S_KIT to the Kubernetes kit (../shared/k8s) ===');
      else emit((await podStartPhase(o.quick ? 20 : 50, say)).report);
    }
    if (o.k8sMemory) {
      say('k8s-memory: agent RSS in Kubernetes mode, empty vs 200 NetworkPolicies vs 1,000 pods');
      emit(k8sMemoryTable(await k8sMemory(say)));
    }
    let cni: CniOp[] = [];
    if (o.cni) {
      cni = await cniPhase(st, o, o.datapath || o.observe || o.policy);
      emit([
        `## CNI ADD/DEL latency (exec of the plugin until exit, from the node netns, ms)`,
        '',
        cniTable(cni),
        '',
        cniConcTable(cni, 2 * o.pods, o.conc),
        '',
        ...cni.filter((c) => c.settledMs !== undefined).map((c) => `- ${c.plugin}, ${c.pods} pods at concurrency ${c.conc}: every pod on its tcx link ${(c.settledMs! / 1000).toFixed(2)} s after the last ADD returned (DEL ran after that).`),
        ...cni.filter((c) => c.unsettled !== undefined).map((c) => `- ${c.plugin}, ${c.pods} pods at concurrency ${c.conc}: ${c.unsettled} attachment(s) still on tc filters 120 s after the last ADD (DEL ran then).`),
        '- ptp: reference ptp + host-local; tendril: bin/tendril-cni -> agent (tcx, the default: a pod starts on a tc filter, switched to its tcx link once the node is quiet); tendril-tc: the same with `--attach-mode tc`. Pod netns created before, untimed; DEL gets the ADD result as prevResult.',
        '',
      ]);
      const bad = cni.filter((c) => c.failures > 0);
      if (bad.length) {
        failed = true;
        emit(['**CNI failures:**', ...bad.map((c) => `- ${c.plugin} ${c.op} ${c.pods} pods conc ${c.conc}: ${c.failures} failed; first: ${c.firstError ?? '?'}`), '']);
      }
    }
    const verdicts = [...targetVerdicts(rows, cni, o.pods, 2 * o.pods, o.conc), ...observeVerdicts(orows), ...policyVerdicts(prows, pol?.latency ?? []), ...xnodeVerdicts(xrows), ...masqVerdicts(masqRows(msamples))];
    emit(['## Targets', '', ...verdicts.map((v) => v.text), ...rateSummary(levels), '', `_bench took ${((Date.now() - started) / 60_000).toFixed(1)} min_`]);
    const dir = path.join(REPO_ROOT, 'bench/results');
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, `${new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15)}${o.quick ? '-quick' : ''}.md`);
    const all = [...samples, ...osamples, ...xsamples];
    const raw = all.length ? ['', '## Per-round samples', '', dpSamplesTable(all)] : [];
    if (follows.length) raw.push('', '### Flows the follower got per observed test', '', followSamplesTable(follows));
    if (pol) raw.push('', '### Policy phase per-round samples', '', dpSamplesTable(pol.samples));
    if (msamples.length) raw.push('', '### Masquerade phase per-round samples', '', masqSamplesTable(msamples));
    fs.writeFileSync(file, [...head, ...body, ...raw, ''].join('\n'));
    say(`results written to ${path.relative(process.cwd(), file) || file}`);
  } finally {
    await cleanup(st);
  }
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
