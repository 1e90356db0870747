/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* L2 announcements: the native device answers ARP for the LoadBalancer IPs this node announces. */
#ifndef __TENDRIL_L2ANNOUNCE_H_
#define __TENDRIL_L2ANNOUNCE_H_

#include "common.h"
#include "eth.h"
#include "arp.h"

#define L2_RESPONDER_MAP_SIZE	4096

/*
 * Value of tendril_l2_responder (24 bytes, no implicit padding; src/l2/maps.ts
 * must match): the device the IP is announced on, the MAC to answer with, and
 * until when (bpf_ktime_get_ns()) the agent's lease lets this node answer: the
 * agent pushes it forward at every renewal, so a node whose agent died stops
 * answering when its lease runs out, as another node takes over.
 */
struct l2_responder_entry {
	__u32	ifindex;
	__u8	mac[6];
	__u16	pad;
	__u32	pad2;
	__u64	expires_ns;
};

_Static_assert(sizeof(struct l2_responder_entry) == 24, "l2_responder_entry must be 24 bytes");

/* LoadBalancer IPv4 -> where this node answers for it. Written by the agent for the IPs whose lease it holds. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, struct l2_responder_entry);
	__uint(max_entries, L2_RESPONDER_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_l2_responder SEC(".maps");

/*
 * An ARP request (broadcast, or unicast to the entry's MAC) for an announced
 * IP, arriving on the device it is announced on, is turned into the reply in
 * place and sent back out of that device (as Cilium's bpf_xdp L2 responder
 * does). Anything else, ARP for the node's own addresses included, goes on to
 * the stack. Returns TC_ACT_REDIRECT or TC_ACT_OK.
 */
static __always_inline int l2_respond(struct __sk_buff *skb)
{
	const struct l2_responder_entry *e;
	struct ethhdr *eth;
	struct arp_eth *arp = arp_request(skb, &eth);
	__be32 tip;

	if (!arp)
		return TC_ACT_OK;
	tip = arp->ar_tip;
	e = bpf_map_lookup_elem(&tendril_l2_responder, &tip);
	if (!e || e->ifindex != skb->ifindex || e->expires_ns < bpf_ktime_get_ns())
		return TC_ACT_OK;
	if (!eth_is_bcast(eth->h_dest) && !eth_addr_equal(eth->h_dest, e->mac))
		return TC_ACT_OK;
	/* Duplicate address detection probes (sender 0.0.0.0) are answered too: the address is taken. */
	return arp_reply(skb, eth, arp, e->mac);
}

#endif /* __TENDRIL_L2ANNOUNCE_H_ */
