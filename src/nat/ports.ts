// The node's own ephemeral ports kept out of the SNAT range: the kernel never picks a port of the range for the
// node's connections, so a translated flow and one of the node's own never share node-IP:port towards one ip:port.
import fs from 'node:fs';

const RANGE_FILE = '/proc/sys/net/ipv4/ip_local_port_range';

/**
 * The ephemeral range for a node whose current one is [lo, hi] when SNAT uses [min, max]: unchanged when they do not
 * overlap, else the part of 1024-65535 above the SNAT range when it has at least 1024 ports (Linux's default range sits
 * below 61000: the node keeps 61000-65535, and low ports stay free for services), else the larger of the two parts.
 */
export function ephemeralRangeFor(cur: { lo: number; hi: number }, min: number, max: number): { lo: number; hi: number } {
  if (cur.hi < min || cur.lo > max) return cur;
  const above = { lo: max + 1, hi: 65535 };
  const below = { lo: 1024, hi: min - 1 };
  const size = (r: { lo: number; hi: number }): number => Math.max(0, r.hi - r.lo + 1);
  if (size(above) >= 1024) return above;
  if (size(above) === 0 && size(below) === 0) throw new RangeError(`The SNAT range ${min}-${max} leaves the node no ephemeral port`);
  return size(above) >= size(below) ? above : below;
}

export function readEphemeralRange(): { lo: number; hi: number } {
  const [lo, hi] = fs.readFileSync(RANGE_FILE, 'utf8').trim().split(/\s+/).map(Number);
  return { lo: lo!, hi: hi! };
}

/** Moves the calling namespace's ephemeral range out of [min, max]; returns what it was and is. */
export function keepEphemeralOutOf(min: number, max: number): { before: { lo: number; hi: number }; now: { lo: number; hi: number } } {
  const before = readEphemeralRange();
  const now = ephemeralRangeFor(before, min, max);
  if (now.lo !== before.lo || now.hi !== before.hi) fs.writeFileSync(RANGE_FILE, `${now.lo}\t${now.hi}`);
  return { before, now };
}
