// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Endpoint programs: one loaded instance serves every pod of the node. */

#define EVENT_FILE	EVENT_FILE_LXC

#include "lib/common.h"
#include "lib/config.h"
#include "lib/events.h"
#include "lib/drop.h"
#include "lib/trace.h"
#include "lib/maps.h"
#include "lib/endpoint.h"
#include "lib/eth.h"
#include "lib/ipv4.h"
#include "lib/arp.h"
#include "lib/identity.h"
#include "lib/ipcache.h"
#include "lib/encap.h"
#include "lib/fib.h"
#include "lib/local_delivery.h"
#include "lib/conntrack.h"
#include "lib/policy.h"
#include "lib/lb.h"
#include "lib/proxy.h"
#include "lib/nodeport.h"
#include "lib/egress.h"

/*
 * IPv4 leaving the pod @src. Returns a TC verdict or a DROP_* code. Traces:
 * from-endpoint, then where the packet goes (to-endpoint, to-overlay,
 * to-network or to-stack). Conntrack and egress policy of @src run for
 * every destination; a pod of this node also gets its ingress policy here,
 * before the packet is redirected into it.
 */
static __always_inline int handle_ipv4_from_lxc(struct __sk_buff *skb,
						const struct endpoint_info *src)
{
	const struct remote_endpoint_info *info = NULL;
	const struct endpoint_info *dst;
	__be32 tunnel_endpoint;
	struct trace_ctx trace;
	struct ct_pkt pkt;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 dst_label, now;
	bool taken;
	int ret;

	ret = ipv4_load(skb, &eth, &ip);
	if (IS_ERR(ret))
		return ret;

	/* Anti-spoofing: a pod may only send from its own address. */
	if (ip->saddr != src->ip4)
		return DROP_INVALID_SIP;

	ret = ct_extract4(skb, ip, &pkt);
	if (IS_ERR(ret))
		return ret;

	/* Service frontend -> backend first: policy, conntrack and flows see the backend. */
	ret = lb4_from_lxc(skb, &eth, &ip, &pkt, src->lxc_id, src->ifindex);
	if (ret)
		return ret;

	trace_start(skb, ip, TRACE_HOOK_FROM_CONTAINER, &trace);
	dst = lookup_ip4_endpoint(ip->daddr);
	if (dst) {
		dst_label = dst->sec_id;
		trace_point(skb, &trace, TRACE_FROM_ENDPOINT, src->lxc_id, src->sec_id, dst_label,
			    ep_is_host(dst) ? 0 : dst->lxc_id);
	} else {
		/*
		 * Off-node: the ipcache knows pods and nodes of the cluster. A
		 * miss is the world, and the node's stack routes it.
		 */
		info = ipcache_lookup4(ip->daddr);
		dst_label = info ? info->sec_identity : IDENTITY_WORLD;
		trace_point(skb, &trace, TRACE_FROM_ENDPOINT, src->lxc_id, src->sec_id, dst_label, 0);
	}

	now = ct_now();
	ret = ct_policy4(skb, &pkt, src, CT_EGRESS, dst_label, src->sec_id, now);
	if (ret)
		return ret;
	/* L7 egress: to the node proxy. Else a reply to the proxy's upstream connection, for a client off-node
	 * (local clients' replies are caught on delivery). */
	if (pkt.proxy_port)
		return proxy_redirect4(skb, &trace, &pkt, pkt.proxy_port, src->lxc_id, src->sec_id, dst_label);
	if (!dst) {
		ret = proxy_reply4(skb, &trace, &pkt, src->lxc_id, src->sec_id, dst_label, &taken);
		if (taken)
			return ret;
		/* A backend's reply to a NodePort client outside (the world, another node): from the node port, out of
		 * the native device. A reply to its ingress conntrack entry only: the pod's own flows to the world (a
		 * masqueraded one's every packet) skip the lookup. */
		if ((dst_label == IDENTITY_WORLD || dst_label == IDENTITY_REMOTE_NODE || dst_label >= IDENTITY_LOCAL_MIN) &&
		    !pkt.no_ports && !pkt.icmp_error && pkt.status == CT_REPLY) {
			ret = nodeport_rev_from_lxc(skb, &pkt.tuple);
			if (ret)
				return ret;
			/* Unchanged, but the verifier forgets packet pointers across a call that may change it. */
			ret = ipv4_load(skb, &eth, &ip);
			if (IS_ERR(ret))
				return ret;
		}
	}

	if (dst) {
		if (ep_is_host(dst))
			goto to_stack;
		return deliver_to_endpoint4(skb, &trace, &pkt, eth, ip, dst, src->sec_id, now, DELIVER_ROUTED);
	}

	/*
	 * An egress gateway policy's traffic to the world goes to its gateway
	 * node (lib/egress.h): through the tunnel, or in native routing with the
	 * gateway as next hop.
	 */
	tunnel_endpoint = egress_gw_redirect4(ip->saddr, ip->daddr, info);
	if (tunnel_endpoint) {
		if (tunnel_mode()) {
			ret = encap_and_redirect(skb, tunnel_endpoint, src->sec_id);
			if (ret == TC_ACT_REDIRECT)
				trace_point(skb, &trace, TRACE_TO_OVERLAY, src->lxc_id, src->sec_id, dst_label, 0);
			return ret;
		}
		ret = fib_redirect4_to(skb, eth, ip, tunnel_endpoint);
		if (ret == TC_ACT_REDIRECT)
			trace_point(skb, &trace, TRACE_TO_NETWORK, src->lxc_id, src->sec_id, dst_label, 0);
		if (ret != TC_ACT_OK)
			return ret;
	}

	if (!info || info->sec_identity == IDENTITY_HOST)
		goto to_stack;

	tunnel_endpoint = ipcache_tunnel_endpoint(info);
	if (tunnel_endpoint) {
		ret = encap_and_redirect(skb, tunnel_endpoint, src->sec_id);
		if (ret == TC_ACT_REDIRECT)
			trace_point(skb, &trace, TRACE_TO_OVERLAY, src->lxc_id, src->sec_id, dst_label, 0);
		return ret;
	}
	if (!tunnel_mode()) {
		ret = fib_redirect4(skb, eth, ip);
		if (ret == TC_ACT_REDIRECT) {
			trace_point(skb, &trace, TRACE_TO_NETWORK, src->lxc_id, src->sec_id, dst_label, 0);
			/* Traced: cil_to_netdev, which the redirect passes, does not trace it a second time. */
			if (CONFIG_MASQ)
				skb->mark = MARK_MAGIC_TRACED_NET;
		}
		if (ret != TC_ACT_OK)
			return ret;
	}

	/*
	 * The stack routes the rest: the world, this node's addresses, and in
	 * tunnel mode what has no tunnel endpoint (e.g. a node's underlay IP).
	 */
to_stack:
	trace_point(skb, &trace, TRACE_TO_STACK, src->lxc_id, src->sec_id, dst_label, 0);
	return TC_ACT_OK;
}

/*
 * Ingress of the pod's host-side veth, i.e. packets leaving the pod. The
 * source endpoint is found by the veth's ifindex, so one program instance
 * serves every pod. Returns a TC verdict or a DROP_* code; @source is set to
 * the pod's endpoint ID once known.
 */
static __always_inline int from_container(struct __sk_buff *skb, __u16 *source)
{
	const struct endpoint_info *src;

	/* cb is scratch space left by whoever had the skb before: no identity known yet. */
	set_src_identity(skb, IDENTITY_UNKNOWN);
	src = lookup_ep_by_ifindex(skb->ifindex);
	/* Attached before the agent filled the maps, or a stale attachment. */
	if (!src)
		return DROP_EP_NOT_READY;
	*source = src->lxc_id;
	set_src_identity(skb, src->sec_id);

	switch (skb->protocol) {
	case bpf_htons(ETH_P_IP):
		return handle_ipv4_from_lxc(skb, src);
	case bpf_htons(ETH_P_ARP):
		return arp_respond(skb, src->node_mac, src->ip4);
	default:
		/* IPv6 and anything else: not supported yet, keep it off the node. */
		return DROP_UNKNOWN_L3;
	}
}

/* What cil_from_container runs: from_container(), then its drop notification. */
static __always_inline int from_container_notify(struct __sk_buff *skb)
{
	__u16 source = 0;
	int ret = from_container(skb, &source);

	/* The pod sending: its egress (a destination pod's policy drop is notified as that pod's ingress). */
	if (IS_ERR(ret))
		return send_drop_notify_ep_dir(skb, ret, source, METRIC_DIR_EGRESS);
	return ret;
}

SEC("tc")
int cil_from_container(struct __sk_buff *skb)
{
	return from_container_notify(skb);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
