/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* ARP responder: answers a pod's ARP requests with the host-side veth MAC. */
#ifndef __TENDRIL_ARP_H_
#define __TENDRIL_ARP_H_

#include "common.h"
#include "eth.h"

/*
 * <linux/if_arp.h> drags in libc's socket headers, which do not build for the
 * BPF target, so the few ARP constants are spelled out here.
 */
#define ARPHRD_ETHER	1
#define ARPOP_REQUEST	1
#define ARPOP_REPLY	2

struct arp_hdr {
	__be16		ar_hrd;		/* hardware type */
	__be16		ar_pro;		/* protocol type */
	__u8		ar_hln;		/* hardware address length */
	__u8		ar_pln;		/* protocol address length */
	__be16		ar_op;
};

/* ARP for IPv4 over Ethernet, the only kind a pod sends. */
struct arp_eth {
	struct arp_hdr	hdr;
	__u8		ar_sha[ETH_ALEN];
	__be32		ar_sip;
	__u8		ar_tha[ETH_ALEN];
	__be32		ar_tip;
} __attribute__((packed));

_Static_assert(sizeof(struct arp_eth) == 28, "arp_eth must be 28 bytes");

/*
 * The ARP request (IPv4 over Ethernet) in @skb, with *@eth its Ethernet
 * header, or NULL for anything else.
 */
static __always_inline struct arp_eth *arp_request(struct __sk_buff *skb, struct ethhdr **eth)
{
	void *data, *data_end;
	struct arp_eth *arp;

	if (!ctx_pull(skb, sizeof(struct ethhdr) + sizeof(*arp), &data, &data_end))
		return NULL;
	*eth = data;
	arp = data + sizeof(struct ethhdr);
	if (arp->hdr.ar_op != bpf_htons(ARPOP_REQUEST) ||
	    arp->hdr.ar_hrd != bpf_htons(ARPHRD_ETHER) ||
	    arp->hdr.ar_pro != bpf_htons(ETH_P_IP) ||
	    arp->hdr.ar_hln != ETH_ALEN || arp->hdr.ar_pln != 4)
		return NULL;
	return arp;
}

/*
 * Turns the request @arp (in @eth) into its reply in place, @mac answering
 * for the target address, and sends it back out of @skb's interface.
 * Returns TC_ACT_REDIRECT. The ARP responders of the endpoint (below) and of
 * L2 announcements (lib/l2announce.h) differ only in whom they answer for.
 */
static __always_inline int arp_reply(struct __sk_buff *skb, struct ethhdr *eth, struct arp_eth *arp,
				     const __u8 *mac)
{
	__u8 sha[ETH_ALEN];
	__be32 sip = arp->ar_sip, tip = arp->ar_tip;

	__builtin_memcpy(sha, arp->ar_sha, ETH_ALEN);
	eth_rewrite(eth, mac, sha);
	arp->hdr.ar_op = bpf_htons(ARPOP_REPLY);
	__builtin_memcpy(arp->ar_sha, mac, ETH_ALEN);
	arp->ar_sip = tip;
	__builtin_memcpy(arp->ar_tha, sha, ETH_ALEN);
	arp->ar_tip = sip;
	return bpf_redirect(skb->ifindex, 0);
}

/*
 * Answer an ARP request in place when it asks for any address except the
 * pod's own: the pod's routes point at a gateway reached through this veth,
 * and answering every target (not only the router IP) keeps pods working if
 * the router IP changes across an agent restart (as Cilium does). A request
 * for the pod's own address (duplicate address detection) and anything else
 * go on to the stack.
 *
 * Returns TC_ACT_REDIRECT (reply sent back out of @skb's interface toward the
 * pod: egress of the same veth) or TC_ACT_OK.
 */
static __always_inline int arp_respond(struct __sk_buff *skb, const __u8 *node_mac,
				       __be32 own_ip4)
{
	struct ethhdr *eth;
	struct arp_eth *arp = arp_request(skb, &eth);

	if (!arp)
		return TC_ACT_OK;
	/* A unicast request for some other MAC is not ours to answer. */
	if (!eth_is_bcast(eth->h_dest) && !eth_addr_equal(eth->h_dest, node_mac))
		return TC_ACT_OK;
	if (arp->ar_tip == own_ip4)
		return TC_ACT_OK;
	return arp_reply(skb, eth, arp, node_mac);
}

#endif /* __TENDRIL_ARP_H_ */
