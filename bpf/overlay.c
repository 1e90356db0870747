// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* tendril_vxlan programs: traffic of other nodes' pods arriving through the tunnel. */

#define EVENT_FILE	EVENT_FILE_OVERLAY

#include "lib/common.h"
#include "lib/config.h"
#include "lib/events.h"
#include "lib/drop.h"
#include "lib/trace.h"
#include "lib/maps.h"
#include "lib/endpoint.h"
#include "lib/eth.h"
#include "lib/ipv4.h"
#include "lib/identity.h"
#include "lib/local_delivery.h"
#include "lib/conntrack.h"
#include "lib/policy.h"

/*
 * Ingress of tendril_vxlan, i.e. after the kernel decapsulated a packet. The
 * VNI is the sender's source identity. A packet for a local pod goes straight
 * into it once the pod's ingress policy allows it; anything else arriving through the tunnel is for this node (its
 * router IP answering, replies to the node) and goes to its stack.
 *
 * Traces from-overlay, then to-endpoint or to-stack.
 */
static __always_inline int from_overlay(struct __sk_buff *skb)
{
	const struct endpoint_info *ep;
	struct bpf_tunnel_key key = {};
	struct trace_ctx trace;
	struct ct_pkt pkt;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 dst_label;
	int ret;

	set_src_identity(skb, IDENTITY_UNKNOWN);
	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0)
		return DROP_NO_TUNNEL_KEY;
	/* Only our own datapath may claim to be the host; from the wire it is forged (as Cilium). */
	if (key.tunnel_id == IDENTITY_HOST || key.tunnel_id == IDENTITY_UNKNOWN)
		return DROP_INVALID_IDENTITY;
	set_src_identity(skb, key.tunnel_id);

	/* IPv6 and anything else: not supported yet; the stack drops what it cannot use. */
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;

	ret = ipv4_load(skb, &eth, &ip);
	if (IS_ERR(ret))
		return ret;

	trace_start(skb, ip, TRACE_HOOK_FROM_OVERLAY, &trace);
	ep = lookup_ip4_endpoint(ip->daddr);
	if (ep && !ep_is_host(ep)) {
		trace_point(skb, &trace, TRACE_FROM_OVERLAY, 0, key.tunnel_id, ep->sec_id, ep->lxc_id);
		ret = ct_extract4(skb, ip, &pkt);
		if (IS_ERR(ret))
			return ret;
		return deliver_to_endpoint4(skb, &trace, &pkt, eth, ip, ep, key.tunnel_id, ct_now(), DELIVER_ROUTED);
	}
	dst_label = ep ? ep->sec_id : IDENTITY_WORLD;
	trace_point(skb, &trace, TRACE_FROM_OVERLAY, 0, key.tunnel_id, dst_label, 0);
	ret = ipv4_host_delivery(eth);
	trace_point(skb, &trace, TRACE_TO_STACK, 0, key.tunnel_id, dst_label, 0);
	return ret;
}

/* What cil_from_overlay runs: from_overlay(), then its drop notification. */
static __always_inline int from_overlay_notify(struct __sk_buff *skb)
{
	int ret = from_overlay(skb);

	if (IS_ERR(ret))
		return send_drop_notify_dir(skb, ret, METRIC_DIR_INGRESS);
	return ret;
}

SEC("tc")
int cil_from_overlay(struct __sk_buff *skb)
{
	return from_overlay_notify(skb);
}

/* Egress of tendril_vxlan: a hook for later (encryption, trace); the tunnel key is already set. */
SEC("tc")
int cil_to_overlay(struct __sk_buff *skb)
{
	(void)skb;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
