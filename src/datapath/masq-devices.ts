// Masquerade devices of an earlier configuration: a device dropped from --masquerade-interfaces keeps the programs an
// earlier start attached to it (tcx links pinned, or cls_bpf filters) until something takes them off. start() looks
// for them after it attached the current set, on the devices themselves (no record needed: also an agent from before
// this check, and attach mode 'tc', which pins nothing), and detaches them.
import { BpfProgram, queryTcx } from '../kernel/bpf/index.js';
import type { Netlink } from '../kernel/netlink/index.js';
import type { LinkInfo } from '../kernel/netlink/index.js';
import { PROG_TO_NETDEV } from './maps.js';

/** The kernel keeps 15 characters of a program's name. */
const TO_NETDEV_KNAME = PROG_TO_NETDEV.slice(0, 15);

/** Name of the program `progId` (kernel's), '' when it is gone. */
function progName(progId: number): string {
  try {
    const p = BpfProgram.fromId(progId);
    try {
      return p.name;
    } finally {
      p.close();
    }
  } catch {
    return '';
  }
}

/** Does the egress of `ifindex` run our cil_to_netdev, as a tcx program or a tc filter? */
function runsToNetdev(nl: Netlink, ifindex: number): boolean {
  try {
    if (queryTcx(ifindex, 'egress').some((a) => a.progName === TO_NETDEV_KNAME)) return true;
  } catch {
    // No tcx on this kernel (or the device went): its filters tell.
  }
  return nl.listBpfFilters(ifindex, 'egress').some((f) => f.progId !== undefined && progName(f.progId) === TO_NETDEV_KNAME);
}

/**
 * Devices of the calling thread's namespace, other than those in `keep` (ifindexes), whose egress runs
 * cil_to_netdev. Only devices with an IPv4 address are looked at: a masquerade device needs one (its traffic leaves
 * with it), a pod's host-side veth has none, so a node with many pods pays one address dump, not a query per veth.
 */
export function staleMasqDevices(nl: Netlink, keep: ReadonlySet<number>): LinkInfo[] {
  const withAddr = new Set(nl.listAddresses().map((a) => a.index));
  return nl.listLinks().filter((l) => withAddr.has(l.index) && !keep.has(l.index) && l.name !== 'lo' && runsToNetdev(nl, l.index));
}
