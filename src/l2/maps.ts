// Byte layout of the L2 responder map (mirror of bpf/lib/l2announce.h) and its name.
import { structCodec, u32, u64, type Codec, type StructCodec } from '../kernel/bpf/index.js';
import { ipv4Codec, macCodec } from '../datapath/maps.js';

export const L2_RESPONDER_MAP = 'tendril_l2_responder';
export const L2_RESPONDER_MAP_SIZE = 4096;

/** Value of tendril_l2_responder (struct l2_responder_entry). */
export interface L2ResponderEntry {
  /** The device the IP is announced on (the node's native device). */
  ifindex: number;
  /** The MAC ARP replies carry. */
  mac: string;
  /** CLOCK_MONOTONIC ns (bpf_ktime_get_ns, process.hrtime.bigint) after which the datapath stops answering. */
  expiresNs: bigint;
}

export const l2ResponderKeyCodec: Codec<string> = ipv4Codec;

export const l2ResponderEntryCodec: StructCodec<L2ResponderEntry> = structCodec<L2ResponderEntry>(24, {
  ifindex: [0, u32],
  mac: [4, macCodec],
  expiresNs: [16, u64],
});
