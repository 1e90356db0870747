/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Delivery of a packet to a pod on this node. */
#ifndef __TENDRIL_LOCAL_DELIVERY_H_
#define __TENDRIL_LOCAL_DELIVERY_H_

#include "common.h"
#include "drop.h"
#include "eth.h"
#include "ipv4.h"
#include "maps.h"

/*
 * Pod-to-pod on the same node, from the ingress of the source's veth: act as
 * the router the pod believes it talks to (L2 rewrite, TTL - 1) and hand the
 * packet straight to the destination pod's eth0 with bpf_redirect_peer, which
 * skips the host-side veth and the backlog queue. Only valid on an ingress
 * hook. The destination's ingress policy goes here, before the redirect, once
 * policy exists.
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

#endif /* __TENDRIL_LOCAL_DELIVERY_H_ */
