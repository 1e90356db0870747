/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Delivery of a packet to a pod on this node (after its ingress policy), and to the node's own stack. */
#ifndef __TENDRIL_LOCAL_DELIVERY_H_
#define __TENDRIL_LOCAL_DELIVERY_H_

#include "common.h"
#include "config.h"
#include "drop.h"
#include "eth.h"
#include "ipv4.h"
#include "maps.h"
#include "trace.h"
#include "conntrack.h"
#include "policy.h"
#include "lb.h"
#include "proxy.h"

/* How deliver_to_endpoint4() hands a packet over. */
#define DELIVER_ROUTED		0	/* from an ingress hook: this node routes it */
#define DELIVER_FROM_STACK	1	/* from the egress of tendril_host: the stack routed it */

/*
 * The one way into a pod of this node: the pod's conntrack and ingress
 * policy for a packet from @src_label, the hand-over, then the to-endpoint
 * trace. Every local delivery (from a pod, the node's stack, the tunnel, the
 * native device) goes through here, so policy runs before each by
 * construction.
 *
 * DELIVER_ROUTED (ingress hooks: a pod's veth, tendril_vxlan, the native
 * device): act as the router the pod believes it talks to (L2 rewrite,
 * TTL - 1) and hand the packet straight to the pod's eth0 with
 * bpf_redirect_peer, which skips the host-side veth and the backlog queue.
 * DELIVER_FROM_STACK (egress of tendril_host): the stack did the routing hop;
 * L2 rewrite and out of the pod's host-side veth.
 *
 * Returns TC_ACT_REDIRECT, TC_ACT_SHOT after a policy drop (already
 * notified), or a DROP_* code for the caller's entry point to notify.
 */
static __always_inline int deliver_to_endpoint4(struct __sk_buff *skb, struct trace_ctx *trace,
						struct ct_pkt *pkt, struct ethhdr *eth,
						struct iphdr *ip, const struct endpoint_info *dst,
						__u32 src_label, __u32 now, int how)
{
	bool taken;
	int ret;

	/* A reply to the proxy's upstream connection, addressed to the client pod it speaks for. */
	if (how == DELIVER_ROUTED) {
		ret = proxy_reply4(skb, trace, pkt, 0, src_label, dst->sec_id, &taken);
		if (taken)
			return ret;
	}

	ret = ct_policy4(skb, pkt, dst, CT_INGRESS, src_label, src_label, now);
	if (ret)
		return ret;
	/* A backend's reply to a service client: the frontend it connected to becomes the source again. */
	ret = lb4_rev_nat(skb, &eth, &ip, pkt);
	if (ret)
		return ret;
	/* L7 ingress: to the proxy, unless the proxy is the sender (its rules ran); from the stack there is no
	 * socket assignment (tc egress), so such a connection fails. */
	if (pkt->proxy_port && !from_proxy(skb)) {
		if (how != DELIVER_ROUTED)
			return DROP_PROXY_ASSIGN_FAILED;
		return proxy_redirect4(skb, trace, pkt, pkt->proxy_port, dst->lxc_id, src_label, dst->sec_id);
	}

	if (how == DELIVER_FROM_STACK) {
		eth_rewrite(eth, dst->node_mac, dst->mac);
		ret = bpf_redirect(dst->ifindex, 0);
	} else {
		if (ip->ttl <= 1)
			return DROP_TTL_EXCEEDED;
		eth_rewrite(eth, dst->node_mac, dst->mac);
		ipv4_dec_ttl(ip);
		ret = bpf_redirect_peer(dst->ifindex, 0);
	}
	if (ret == TC_ACT_REDIRECT)
		trace_point(skb, trace, TRACE_TO_ENDPOINT, dst->lxc_id, src_label, dst->sec_id, dst->lxc_id);
	return ret;
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
