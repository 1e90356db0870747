// Gratuitous ARP: the frames a node sends on its native device when it takes over an L2 announcement, so that hosts
// on the segment move their neighbour entry for the LoadBalancer IP to its MAC at once instead of when the entry
// goes stale (as MetalLB and Cilium's L2 announcer do on failover). Pure: building frames, no I/O.
import { parseIPv4 } from '../util/ip.js';

const ETH_P_ARP = 0x0806;
const ETH_P_IP = 0x0800;
const ARPHRD_ETHER = 1;
export const ARPOP_REQUEST = 1;
export const ARPOP_REPLY = 2;
/** Ethernet header + ARP for IPv4 over Ethernet (no padding: the device pads to the minimum frame). */
export const GARP_FRAME_LEN = 14 + 28;

function macBytes(mac: string): Buffer {
  const parts = mac.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-f]{2}$/i.test(p))) throw new TypeError(`Invalid MAC address "${mac}"`);
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

/**
 * One gratuitous ARP frame for `ip` at `mac`, broadcast: sender and target IP both `ip`. A request has an all-zero
 * target MAC; a reply carries `mac` as target MAC too (Linux takes a reply as gratuitous only when target and sender
 * MAC are equal, and then overrides the entry even within its locktime).
 */
export function garpFrame(op: typeof ARPOP_REQUEST | typeof ARPOP_REPLY, ip: string, mac: string): Buffer {
  const m = macBytes(mac);
  const addr = parseIPv4(ip) >>> 0;
  const f = Buffer.alloc(GARP_FRAME_LEN);
  f.fill(0xff, 0, 6);
  m.copy(f, 6);
  f.writeUInt16BE(ETH_P_ARP, 12);
  f.writeUInt16BE(ARPHRD_ETHER, 14);
  f.writeUInt16BE(ETH_P_IP, 16);
  f.writeUInt8(6, 18);
  f.writeUInt8(4, 19);
  f.writeUInt16BE(op, 20);
  m.copy(f, 22);
  f.writeUInt32BE(addr, 28);
  if (op === ARPOP_REPLY) m.copy(f, 32);
  f.writeUInt32BE(addr, 38);
  return f;
}

/** What a takeover sends: a gratuitous request (what most hosts act on) and a gratuitous reply. */
export function garpFrames(ip: string, mac: string): Buffer[] {
  return [garpFrame(ARPOP_REQUEST, ip, mac), garpFrame(ARPOP_REPLY, ip, mac)];
}
