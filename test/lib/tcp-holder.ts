// Long-lived TCP connections from a pod, for socket-LB tests: which backend each one reaches, which ones the agent
// terminates (sock_destroy) when its backend goes, and who still answers at the end.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { netnsPath } from '../../src/lab/paths.js';
import { inNetnsArgv } from '../../src/lab/cgroups.js';
import type { LabPod } from '../../src/lab/lab.js';
import { until } from './proc.js';

/*
 * TCP connections to each of o.targets ({ip, port}), one HTTP request every 500 ms on each (keeps them busy: the web
 * pod closes idle keep-alive connections); prints {names}, then {i, error} / {i, closed} as they come; when stdin
 * ends, each connection still up asks once more and {final} says who answered (null: no answer within o.timeout,
 * or the connection is gone).
 */
export const TCP_HOLDER = `
const net = require('net');
const o = JSON.parse(process.argv[1]); const conns = [];
const say = (v) => process.stdout.write(JSON.stringify(v) + '\\n');
const req = 'GET / HTTP/1.1\\r\\nHost: holder\\r\\n\\r\\n';
const open = (i, t) => new Promise((res) => {
  const c = { s: net.connect(t.port, t.ip), name: null, error: null, closed: false, waiters: [] }; let buf = '';
  c.s.on('connect', () => c.s.write(req));
  c.s.on('data', (d) => { buf += d; let m; while ((m = /Hostname: (\\S+)/.exec(buf))) { buf = buf.slice(m.index + m[0].length); if (!c.name) { c.name = m[1]; res(c); } c.waiters.splice(0).forEach((w) => w(m[1])); } });
  c.s.on('error', (e) => { c.error = e.code; say({ i, error: e.code }); res(c); });
  c.s.on('close', () => { c.closed = true; if (!c.error) say({ i, closed: true }); c.waiters.splice(0).forEach((w) => w(null)); });
  conns.push(c);
});
(async () => {
  for (let i = 0; i < o.targets.length; i++) await open(i, o.targets[i]);
  const iv = setInterval(() => { for (const c of conns) if (!c.error && !c.closed) c.s.write(req); }, 500);
  say({ names: conns.map((c) => c.name) });
  process.stdin.resume();
  process.stdin.on('end', async () => {
    clearInterval(iv);
    const final = [];
    for (const c of conns) final.push(c.error || c.closed ? null : await new Promise((r) => { c.waiters.push(r); setTimeout(() => r(null), o.timeout); c.s.write(req); }));
    say({ final }); process.exit(0);
  });
})();`;

export interface Holder {
  proc: ChildProcessWithoutNullStreams;
  lines: Array<Record<string, unknown>>;
  stderr: () => string;
}

/** Runs a holder script (TCP_HOLDER by default) in a pod's netns and cgroup; its stdout JSON lines land in `lines`. */
export function startHolder(pod: LabPod, arg: unknown, script = TCP_HOLDER): Holder {
  const [cmd, args] = inNetnsArgv(netnsPath(pod.netns), pod.netns, [process.execPath, '-e', script, JSON.stringify(arg)]);
  const proc = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const lines: Array<Record<string, unknown>> = [];
  let buf = '';
  let err = '';
  proc.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      lines.push(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>);
      buf = buf.slice(nl + 1);
    }
  });
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
  return { proc, lines, stderr: () => err };
}

/** Ends the holder's stdin and waits for its {final} answers. */
export async function holderFinal(h: Holder): Promise<Array<string | null>> {
  h.proc.stdin.end();
  await until(`the holder's final answers (${h.stderr()})`, () => h.lines.some((l) => l['final']), 120_000);
  return h.lines.find((l) => l['final'])!['final'] as Array<string | null>;
}
