/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Delivery of a packet to a pod on this node. */
#ifndef __TENDRIL_LOCAL_DELIVERY_H_
#define __TENDRIL_LOCAL_DELIVERY_H_

#include "common.h"
#include "config.h"
#include "drop.h"
#include "eth.h"
#include "ipv4.h"
#include "maps.h"

/*
 * Delivery to a pod of this node, from an ingress hook (the source pod's
 * veth, the tunnel device or the native device): act as the router the pod
 * believes it talks to (L2 rewrite, TTL - 1) and hand the packet straight to
 * the destination pod's eth0 with bpf_redirect_peer, which skips the
 * host-side veth and the backlog queue. Only valid on an ingress hook.
 * Callers run the destination's conntrack and ingress policy (ct_policy4)
 * first.
 */
static __always_inline int ipv4_local_delivery(struct ethhdr *eth, struct iphdr *ip,
					       const struct endpoint_info *dst)
{
	if (ip->ttl <= 1)
		return DROP_TTL_EXCEEDED;

	eth_rewrite(eth, dst->node_mac, dst->mac);
	ipv4_dec_ttl(ip);
	return bpf_redirect_peer(dst->ifindex, 0);
}

/*
 * Hand a packet that arrived through the tunnel to the node's own stack
 * through the ingress of tendril_host. A decapsulated packet still
 * carries the sender's inner MACs; the stack would see a frame for another
 * host and drop it, so it is re-addressed to tendril_host, whose receive path
 * classifies it again. The routing hop is the stack's, so TTL is untouched.
 */
static __always_inline int ipv4_host_delivery(struct ethhdr *eth)
{
	/* Element-wise volatile reads: a plain copy could be folded to the zero default. */
	eth->h_dest[0] = CONFIG_HOST_MAC[0];
	eth->h_dest[1] = CONFIG_HOST_MAC[1];
	eth->h_dest[2] = CONFIG_HOST_MAC[2];
	eth->h_dest[3] = CONFIG_HOST_MAC[3];
	eth->h_dest[4] = CONFIG_HOST_MAC[4];
	eth->h_dest[5] = CONFIG_HOST_MAC[5];
	return bpf_redirect(CONFIG_HOST_IFINDEX, BPF_F_INGRESS);
}

#endif /* __TENDRIL_LOCAL_DELIVERY_H_ */
