// Deterministic host-side interface names, as Cilium names its lxc devices.
import { createHash } from 'node:crypto';

/** "lxc" + first 12 hex of sha256("<containerId>:<ifname>"): 15 bytes, the kernel's IFNAMSIZ limit. */
export function hostIfName(containerId: string, ifname: string): string {
  return 'lxc' + createHash('sha256').update(`${containerId}:${ifname}`).digest('hex').slice(0, 12);
}
