// The "external host" checks of the masquerading tests: a TCP or UDP request from a namespace to a server on the
// external host that answers "seen <ip>:<port>" with the source it saw, and a shell step in a namespace that must work.
import assert from 'node:assert/strict';
import { exec, inNs } from './proc.js';

/** What the external server saw of a TCP connection from `ns` to ip:port ("seen a.b.c.d:p"), or the error. */
export async function tcpSeen(ns: string, ip: string, port = 8080, timeoutMs = 5000): Promise<string> {
  const js =
    `const s = require('net').connect(${port}, '${ip}'); let got = ''; s.on('data', (d) => { got += d; });` +
    `s.on('end', () => { console.log(got); process.exit(0); }); s.on('error', (e) => { console.log(e.code); process.exit(0); });` +
    `setTimeout(() => { console.log('timeout'); process.exit(0); }, ${timeoutMs});`;
  return (await exec(inNs(ns, ['node', '-e', js]))).stdout.trim();
}

/** The same over UDP (sent twice, the second after 500 ms, in case the first met an unresolved neighbour). */
export async function udpSeen(ns: string, ip: string, port = 8080, timeoutMs = 5000): Promise<string> {
  const js =
    `const s = require('dgram').createSocket('udp4'); s.on('error', (e) => { console.log(e.code); process.exit(0); });` +
    `s.on('message', (m) => { console.log(String(m)); process.exit(0); });` +
    `s.connect(${port}, '${ip}', () => { s.send('x'); setTimeout(() => s.send('y'), 500); });` +
    `setTimeout(() => { console.log('timeout'); process.exit(0); }, ${timeoutMs});`;
  return (await exec(inNs(ns, ['node', '-e', js]))).stdout.trim();
}

/** The address of a "seen <ip>:<port>" answer, or the answer in parentheses (an error, a timeout). */
export const seenIp = (s: string): string => /^seen ([\d.]+):\d+$/.exec(s)?.[1] ?? `(${s})`;

/** Runs a command in a namespace; it must succeed. */
export async function sh(ns: string, ...cmd: string[]): Promise<void> {
  const r = await exec(inNs(ns, cmd));
  assert.equal(r.code, 0, `${cmd.join(' ')} in ${ns}: ${r.stderr}`);
}
