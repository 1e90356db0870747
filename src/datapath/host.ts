// Small node-level helpers the agent needs from the kernel: named namespaces and interface lookups.
import { Netns } from '../kernel/netns/index.js';
import { Netlink } from '../kernel/netlink/index.js';

const NETNS_DIR = '/var/run/netns';

/** Creates the named network namespace when missing; returns its path. */
export function ensureNamedNetns(name: string): string {
  if (!Netns.exists(name, NETNS_DIR)) Netns.create(name, NETNS_DIR).close();
  return `${NETNS_DIR}/${name}`;
}

/** ifindex of an interface of this (the calling thread's) namespace, or undefined. */
export function interfaceIndex(name: string): number | undefined {
  const nl = Netlink.open();
  try {
    return nl.getLink(name)?.index;
  } finally {
    nl.close();
  }
}

/** Name of an interface of this namespace by ifindex, or undefined. */
export function interfaceName(ifindex: number): string | undefined {
  const nl = Netlink.open();
  try {
    return nl.getLink(ifindex)?.name;
  } finally {
    nl.close();
  }
}
