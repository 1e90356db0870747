// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* tendril_host and native-device programs: the node's stack and the underlay handing traffic to pods. */

#define EVENT_FILE	EVENT_FILE_HOST

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
#include "lib/ipcache.h"
#include "lib/encap.h"
#include "lib/local_delivery.h"
#include "lib/conntrack.h"
#include "lib/policy.h"
#include "lib/nat.h"
#include "lib/proxy.h"
#include "lib/nodeport.h"
#include "lib/l2announce.h"

/*
 * Egress of tendril_host. The node routes its own pod CIDR and, in tunnel
 * mode, every remote pod CIDR `dev tendril_host`, so pod-bound traffic of the
 * node (and forwarded by it) leaves here. The stack has already done the
 * routing hop (TTL). A local pod gets the packet out of its veth with its
 * MACs (after its ingress policy, the source identity from the ipcache: the
 * node's own addresses are host); a remote one gets it through the tunnel, sent as remote-node
 * identity as Cilium does for host traffic. Everything else, including ARP,
 * continues normally.
 *
 * Traces from-host, then to-endpoint or to-overlay, for the packets it
 * forwards. The source identity (an ipcache lookup) is only looked up for a
 * packet that is reported.
 */
static __always_inline int from_host(struct __sk_buff *skb)
{
	const struct remote_endpoint_info *info;
	const struct endpoint_info *ep;
	__be32 tunnel_endpoint;
	struct trace_ctx trace;
	struct ct_pkt pkt;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 src_label = IDENTITY_UNKNOWN;
	int ret;

	set_src_identity(skb, IDENTITY_UNKNOWN);
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;

	ret = ipv4_load(skb, &eth, &ip);
	if (IS_ERR(ret))
		return ret;

	ep = lookup_ip4_endpoint(ip->daddr);
	if (ep) {
		if (ep_is_host(ep))
			return TC_ACT_OK;
		ret = ct_extract4(skb, ip, &pkt);
		if (IS_ERR(ret))
			return ret;
		/* The node's own addresses are identity host in the ipcache, anything unknown the world. */
		src_label = ipcache_identity4(ip->saddr);
		set_src_identity(skb, src_label);
		trace_start(skb, ip, TRACE_HOOK_FROM_HOST, &trace);
		trace_point(skb, &trace, TRACE_FROM_HOST, 0, src_label, ep->sec_id, ep->lxc_id);
		return deliver_to_endpoint4(skb, &trace, &pkt, eth, ip, ep, src_label, ct_now(), DELIVER_FROM_STACK);
	}

	info = ipcache_lookup4(ip->daddr);
	tunnel_endpoint = ipcache_tunnel_endpoint(info);
	if (tunnel_endpoint && info) {
		trace_start(skb, ip, TRACE_HOOK_FROM_HOST, &trace);
		if (trace.report)
			src_label = ipcache_identity4(ip->saddr);
		trace_point(skb, &trace, TRACE_FROM_HOST, 0, src_label, info->sec_identity, 0);
		/* The proxy's upstream speaks for its client: the peer's policy sees the client's identity. */
		ret = encap_and_redirect(skb, tunnel_endpoint, proxy_source_identity(skb, IDENTITY_REMOTE_NODE));
		if (IS_ERR(ret))
			return ret;
		trace_point(skb, &trace, TRACE_TO_OVERLAY, 0, src_label, info->sec_identity, 0);
		return ret;
	}
	return TC_ACT_OK;
}

/* What cil_from_host runs: from_host(), then its drop notification. */
static __always_inline int from_host_notify(struct __sk_buff *skb)
{
	int ret = from_host(skb);

	/* The node's stack sending: the host's egress, as Cilium counts it (a pod's policy drop is its ingress). */
	if (IS_ERR(ret))
		return send_drop_notify_dir(skb, ret, METRIC_DIR_EGRESS);
	return ret;
}

SEC("tc")
int cil_from_host(struct __sk_buff *skb)
{
	return from_host_notify(skb);
}

/*
 * Ingress of the native device (native routing mode; in tunnel mode for
 * masquerading and the outside's traffic to a local pod's address): pod
 * traffic of other nodes arrives unencapsulated, routed here by their
 * `podCIDR via nodeIP` routes. Packets for a local pod go straight into it once its ingress
 * policy allows; the source identity comes from the ipcache, as nothing on
 * the wire carries it. Everything else
 * is the node's own traffic and goes to its stack.
 *
 * Every IPv4 packet is traced as from-network (as Cilium does; aggregation
 * keeps the node's own traffic to a few events per connection), a delivered
 * one also as to-endpoint.
 */
/*
 * A function of its own, as nodeport_lb4_from_netdev(): the two stack frames are not added up.
 * @deliver: deliver to a local pod in tunnel mode too (snat4_rev() translated the packet, or it is
 * addressed to a local pod); @parsed, when not NULL, is the packet as it
 * is now (SNAT_REV_PKT), else it is parsed here. Global, so verified once, whatever its
 * callers' states: a static function is verified per caller's state, and the ways the caller
 * fills @parsed would multiply the delivery's paths beyond the verifier's limit.
 * @report: SNAT_REV_TRACE_HERE, or whether the translated reply is reported (snat4_rev()).
 */
__attribute__((noinline)) int from_netdev(struct __sk_buff *skb, const struct ct_pkt *parsed, int deliver, int report)
{
	struct ct_pkt pkt;
	const struct endpoint_info *ep;
	struct trace_ctx trace;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 src_label;
	int ret;

	set_src_identity(skb, IDENTITY_UNKNOWN);
	if (skb->protocol == bpf_htons(ETH_P_ARP))
		return l2_respond(skb);
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;

	/*
	 * A reply to a masqueraded flow continues addressed to its pod (lib/nat.h).
	 * In tunnel mode this program is attached for masquerading, and for what
	 * the outside sends a local pod's own address (a router with a route to
	 * the pod CIDR): delivered here, where an L7 port's socket can be assigned
	 * (tc ingress), rather than forwarded by the stack. The rest passes untouched.
	 */
	if (!deliver && tunnel_mode())
		return TC_ACT_OK;

	ret = ipv4_load(skb, &eth, &ip);
	if (IS_ERR(ret))
		return ret;

	/* A translated reply's aggregation was its IN entry's (lib/nat.h, snat4_rev_report()). */
	if (report == SNAT_REV_TRACE_HERE) {
		trace_start(skb, ip, TRACE_HOOK_FROM_NETDEV, &trace);
	} else {
		trace.report = report;
		trace.reason = TRACE_REASON_REPLY;
		if (report)
			flow4_from_ip(skb, ip, &trace.flow);
	}
	ep = lookup_ip4_endpoint(ip->daddr);
	if (!ep || ep_is_host(ep)) {
		if (trace.report)
			trace_point(skb, &trace, TRACE_FROM_NETWORK, 0, ipcache_identity4(ip->saddr),
				    ep ? ep->sec_id : IDENTITY_WORLD, 0);
		return TC_ACT_OK;
	}

	/*
	 * Nothing of this node (its own addresses, its pods) arrives from the
	 * wire: such a source is forged, and would borrow the host's or a
	 * pod's identity, and the host's always-allowed ingress with it. A
	 * translated reply's source is its flow's destination, which had to be
	 * the world to be masqueraded (its IN entry is keyed by it): no lookup.
	 */
	if (!parsed && lookup_ip4_endpoint(ip->saddr))
		return DROP_INVALID_SIP;
	src_label = ipcache_identity4(ip->saddr);
	set_src_identity(skb, src_label);
	trace_point(skb, &trace, TRACE_FROM_NETWORK, 0, src_label, ep->sec_id, ep->lxc_id);
	if (parsed) {
		pkt = *parsed;
	} else {
		ret = ct_extract4(skb, ip, &pkt);
		if (IS_ERR(ret))
			return ret;
	}
	return deliver_to_endpoint4(skb, &trace, &pkt, eth, ip, ep, src_label, ct_now(), DELIVER_ROUTED);
}

/* A packet for a pod of this node (not for the node's own address: that costs no lookup here). */
static __always_inline bool netdev_to_local_pod(struct __sk_buff *skb)
{
	const struct endpoint_info *ep;
	struct ethhdr *eth;
	struct iphdr *ip;

	if (skb->protocol != bpf_htons(ETH_P_IP) || IS_ERR(ipv4_load(skb, &eth, &ip)) ||
	    ip->daddr == CONFIG_NODE_IP4)
		return false;
	ep = lookup_ip4_endpoint(ip->daddr);
	return ep && !ep_is_host(ep);
}

/*
 * What cil_from_netdev runs: the reply of a masqueraded flow translated
 * (lib/nat.h, parsed once for the delivery as well), else NodePort from
 * outside and the replies of its SNATed connections (lib/nodeport.h), then
 * from_netdev(), then its drop notification. A masquerade IN entry and a
 * NodePort one never share a key, so the order changes no verdict. An IN
 * entry without NAT_F_MASQ is NodePort's (a masquerade entry made by a
 * datapath before the flag is not translated back: such a flow reconnects).
 */
static __always_inline int from_netdev_notify(struct __sk_buff *skb)
{
	struct ct_pkt pkt;
	int ret;

	/*
	 * A packet for a pod here (native routing: another node's pod traffic; either mode: the outside's, routed
	 * to the pod's address) is neither a reply of ours nor NodePort's (egress and LoadBalancer IPs are no
	 * pod's): their two lookups, which miss, are spared it.
	 */
	if (netdev_to_local_pod(skb)) {
		ret = from_netdev(skb, NULL, 1, SNAT_REV_TRACE_HERE);
		goto out;
	}
	ret = snat4_rev(skb, &pkt);
	if (IS_ERR(ret))
		goto out;
	if (ret == SNAT_REV_PKT || ret == SNAT_REV_PKT_REPORT) {
		ret = from_netdev(skb, &pkt, 1, ret == SNAT_REV_PKT_REPORT);
		goto out;
	}
	if (ret == SNAT_REV_DONE) {
		ret = from_netdev(skb, NULL, 1, SNAT_REV_TRACE_HERE);
		goto out;
	}
	/* Nothing of the parse stays live past here: NodePort's paths are verified once. */
	ret = nodeport_from_netdev(skb);
	if (!ret)
		ret = from_netdev(skb, NULL, 0, SNAT_REV_TRACE_HERE);
out:
	/* Arriving from the wire: ingress. */
	if (IS_ERR(ret))
		return send_drop_notify_dir(skb, ret, METRIC_DIR_INGRESS);
	return ret;
}

SEC("tc")
int cil_from_netdev(struct __sk_buff *skb)
{
	return from_netdev_notify(skb);
}

/* What cil_to_netdev runs: BPF masquerade (lib/nat.h), then its drop notification. */
static __always_inline int to_netdev_notify(struct __sk_buff *skb)
{
	int ret = snat4_egress(skb);

	/* A pod's packet leaving the node: egress. */
	if (IS_ERR(ret))
		return send_drop_notify_dir(skb, ret, METRIC_DIR_EGRESS);
	return ret;
}

/* Egress of the native device: pod traffic to the world leaves with the node's address. */
SEC("tc")
int cil_to_netdev(struct __sk_buff *skb)
{
	return to_netdev_notify(skb);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
