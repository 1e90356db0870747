/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * NodePort from outside the cluster: a packet arriving on the native device
 * for this node's IP at a node port gets a backend (lib/lb.h's frontend
 * 0.0.0.0:nodePort). A local backend is delivered to with the client's
 * address kept; a remote one (externalTrafficPolicy Cluster) is reached with
 * the source translated to this node's IP and a port of the NAT range
 * (lib/nat.h's tendril_snat_v4 entries and port reservation), through the
 * tunnel or routed natively, so that its replies come back here. Replies get
 * the node IP and node port back as their source and leave the native
 * device straight to the client (the stack would drop a packet arriving with
 * the node's own address as source).
 *
 * With externalTrafficPolicy Local the frontend's LB_SCOPE_EXTERNAL entry
 * holds only this node's backends: none means ICMP port unreachable
 * (DROP_NO_SERVICE), as for a service without backends.
 *
 * A LoadBalancer IP (LB IPAM's, answered for by lib/l2announce.h) is served
 * the same way: a packet for an address other than the node's whose exact
 * frontend (address:port) has LB_F_EXTERNAL; replies get the LB IP as their
 * source. Other packets cost one hash lookup that misses. With
 * loadBalancerSourceRanges (LB_F_SRC_RANGE) a client outside them is
 * dropped as DROP_NOT_IN_SRC_RANGE.
 *
 * Each connection has a reply entry in tendril_lb4_ct, dir LB_CT_NODEPORT,
 * keyed by the backend's reply as the backend sends it (backend -> client),
 * holding the address (node IP or LB IP) and port the client used.
 */
#ifndef __TENDRIL_NODEPORT_H_
#define __TENDRIL_NODEPORT_H_

#include <linux/ip.h>
#include <linux/in.h>

#include "common.h"
#include "config.h"
#include "drop.h"
#include "conntrack.h"
#include "endpoint.h"
#include "encap.h"
#include "fib.h"
#include "identity.h"
#include "ipcache.h"
#include "ipv4.h"
#include "trace.h"
#include "lb.h"
#include "nat.h"
#include "local_delivery.h"

/* Kubernetes' default service-node-port-range (the operator allocates from it, src/lb/alloc.ts). */
#define NODEPORT_PORT_MIN	30000
#define NODEPORT_PORT_MAX	32767

/* tendril_lb4_ct dir of a NodePort connection's reply entry. */
#define LB_CT_NODEPORT		2

/* nodeport_lb4_from_netdev(): the packet was DNATed, deliver it (nodeport_to_local/remote()). Above TC verdicts. */
#define NODEPORT_TO_LOCAL	100
#define NODEPORT_TO_REMOTE	101

/*
 * Out of the native device towards the client (or whatever the FIB says),
 * never to the stack: the packet carries the node's own address as source.
 */
static __always_inline int nodeport_redirect_out(struct __sk_buff *skb)
{
	struct ethhdr *eth;
	struct iphdr *ip;
	int ret;

	ret = ipv4_load(skb, &eth, &ip);
	if (IS_ERR(ret))
		return ret;
	ret = fib_redirect4(skb, eth, ip);
	if (ret != TC_ACT_OK)
		return ret;
	return bpf_redirect_neigh(CONFIG_NATIVE_IFINDEX, NULL, 0, 0);
}

/*
 * The reply entry of @p's connection (as the backend sends it: @p->tuple is
 * backend -> client), or NULL.
 */
static __always_inline const struct lb4_ct_entry *nodeport_reply_entry(__be32 be, __be32 client, __be16 be_port,
									__be16 client_port, __u8 proto)
{
	struct ct_tuple4 t = {};

	t.saddr = be;
	t.daddr = client;
	t.sport = be_port;
	t.dport = client_port;
	t.nexthdr = proto;
	t.dir = LB_CT_NODEPORT;
	return bpf_map_lookup_elem(&tendril_lb4_ct, &t);
}

/*
 * A remote backend's reply to this node's IP at a NAT port: the client's
 * address and port back as destination (the IN entry of tendril_snat_v4),
 * the node IP and node port as source, out to the client. Returns 0 when
 * the packet is no such reply (e.g. a masqueraded flow's, left to
 * snat4_rev()), else a TC verdict or DROP_* code.
 */
static __attribute__((noinline)) int nodeport_rev_snat(struct __sk_buff *skb)
{
	struct ct_pkt pkt;
	struct ct_pkt *p = &pkt;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 l4_off;
	const struct lb4_ct_entry *re;
	struct nat_entry4 *in;
	struct ct_pkt c;
	__be32 client, frontend, node = CONFIG_NODE_IP4;
	__be16 client_port, np_port;
	__u8 proto;
	int ret;

	if (IS_ERR(ipv4_load(skb, &eth, &ip)) || IS_ERR(ct_extract4(skb, ip, &pkt)) || pkt.no_ports)
		return 0;
	l4_off = ETH_HLEN + ip->ihl * 4;
	proto = p->tuple.nexthdr;
	c = *p;
	c.tuple.dir = NAT_DIR_IN;
	c.tuple.pad = 0;
	in = bpf_map_lookup_elem(&tendril_snat_v4, &c.tuple);
	if (!in)
		return 0;
	client = in->to_addr;
	client_port = in->to_port;
	re = nodeport_reply_entry(p->tuple.saddr, client, p->tuple.sport, client_port, proto);
	if (!re)
		return 0;
	/* The node IP, or the LoadBalancer IP the client used. */
	frontend = re->orig_addr;
	np_port = re->orig_port;

	/* The connection's conntrack entry (client -> backend) lives on: the NAT GC keeps the mapping while it does. */
	c.tuple.daddr = client;
	c.tuple.dport = client_port;
	ct_lookup4(&c, CT_INGRESS, ct_now());

	ret = nat_rewrite4(skb, l4_off, proto, IP4_DADDR_OFF, node, client, l4_off + 2, p->tuple.dport, client_port,
			   false);
	if (IS_ERR(ret))
		return ret;
	ret = nat_rewrite4(skb, l4_off, proto, IP4_SADDR_OFF, p->tuple.saddr, frontend, l4_off, p->tuple.sport, np_port,
			   false);
	if (IS_ERR(ret))
		return ret;
	return nodeport_redirect_out(skb);
}

/*
 * Source NAT of a NodePort connection to a remote backend: @p->tuple is
 * client -> backend (after the DNAT). The flow keeps the node port it was
 * given (tendril_snat_v4 OUT entry) or reserves one (snat4_new()), and has a
 * conntrack entry for the NAT GC. Returns 0 with the packet's source
 * rewritten, or a DROP_* code.
 */
static __always_inline int nodeport_snat(struct __sk_buff *skb, struct ct_pkt *p, __u32 l4_off, __u32 now)
{
	struct ct_tuple4 otuple = p->tuple;
	struct nat_entry4 *e, fresh;
	__be16 to_port;
	int ret;

	otuple.dir = NAT_DIR_OUT;
	otuple.pad = 0;
	e = bpf_map_lookup_elem(&tendril_snat_v4, &otuple);
	if (e && !snat4_syn_port_lost(p, CONFIG_NODE_IP4, e->to_port)) {
		to_port = e->to_port;
	} else {
		if (e)
			bpf_map_delete_elem(&tendril_snat_v4, &otuple);
		ret = snat4_new(&otuple, CONFIG_NODE_IP4, 0, &fresh);
		if (IS_ERR(ret))
			return ret;
		to_port = fresh.to_port;
		if (ret == NAT_RACED) {
			e = bpf_map_lookup_elem(&tendril_snat_v4, &otuple);
			if (!e)
				return DROP_NAT_NO_MAPPING;
			to_port = e->to_port;
		}
	}
	if (ct_lookup4(p, CT_EGRESS, now) == CT_NEW)
		ct_create4(p, IDENTITY_WORLD, now);
	return nat_rewrite4(skb, l4_off, p->tuple.nexthdr, IP4_SADDR_OFF, p->tuple.saddr, CONFIG_NODE_IP4, l4_off,
			    p->tuple.sport, to_port, false);
}

/* No backend: ICMP port unreachable back out of the native device, counted as DROP_NO_SERVICE. */
static __attribute__((noinline)) int nodeport_no_service(struct __sk_buff *skb)
{
	send_drop_notify_dir(skb, DROP_NO_SERVICE, METRIC_DIR_INGRESS);
	return lb4_no_service_reply(skb, skb->ifindex);
}

/*
 * A packet from outside to this node's IP at a node port (@frontend 0), or
 * to a LoadBalancer IP at its port (@frontend: that IP) (TCP, UDP, no
 * fragment): a backend of the frontend, and the packet DNATed to it.
 * Returns 0 when the port is no such frontend, NODEPORT_TO_LOCAL/REMOTE, a TC
 * verdict (no backend: answered) or a DROP_* code.
 */
static __attribute__((noinline)) int nodeport_lb4_forward(struct __sk_buff *skb, __be32 frontend)
{
	const struct endpoint_info *ep;
	const struct lb4_service *svc;
	const struct lb4_backend *be;
	struct lb4_ct_entry entry = {};
	struct lb4_key key = {};
	struct ct_tuple4 rev = {};
	struct ct_pkt pkt;
	struct ethhdr *eth;
	struct iphdr *ip;
	__be32 client, daddr;
	__u32 backend_id, l4_off;
	__u8 proto;
	int ret;

	if (IS_ERR(ipv4_load(skb, &eth, &ip)) || IS_ERR(ct_extract4(skb, ip, &pkt)) || pkt.no_ports)
		return 0;
	proto = pkt.tuple.nexthdr;
	l4_off = ETH_HLEN + ip->ihl * 4;
	daddr = pkt.tuple.daddr;

	key.address = frontend;
	key.dport = pkt.tuple.dport;
	key.proto = proto;
	svc = bpf_map_lookup_elem(&tendril_lb4_services, &key);
	if (!svc || (frontend && !(svc->flags & LB_F_EXTERNAL)))
		return 0;
	/* loadBalancerSourceRanges: a LoadBalancer IP's client outside them is dropped (a node port is not checked, as in Cilium). */
	if (frontend && !lb4_src_range_ok(svc, pkt.tuple.saddr))
		return DROP_NOT_IN_SRC_RANGE;
	if (svc->flags & LB_F_EXT_LOCAL) {
		key.scope = LB_SCOPE_EXTERNAL;
		svc = bpf_map_lookup_elem(&tendril_lb4_services, &key);
		if (!svc)
			return 0;
	}
	/* Nothing of this node arrives from the wire (as from_netdev()): such a source is forged. */
	client = pkt.tuple.saddr;
	if (lookup_ip4_endpoint(client))
		return DROP_INVALID_SIP;
	set_src_identity(skb, ipcache_identity4(client));

	be = lb4_sticky_backend(&key, svc, &pkt.tuple, &backend_id);
	if (!be)
		return nodeport_no_service(skb);

	/* The reply as the backend sends it: backend -> client. */
	rev.saddr = be->address;
	rev.daddr = client;
	rev.sport = be->port;
	rev.dport = pkt.tuple.sport;
	rev.nexthdr = proto;
	rev.dir = LB_CT_NODEPORT;
	entry.backend_id = backend_id;
	entry.rev_nat_index = svc->rev_nat_index;
	entry.orig_addr = daddr;
	entry.orig_port = pkt.tuple.dport;
	{
		const struct lb4_ct_entry *re = bpf_map_lookup_elem(&tendril_lb4_ct, &rev);

		if (!re || re->rev_nat_index != entry.rev_nat_index || re->orig_addr != entry.orig_addr ||
		    re->orig_port != entry.orig_port || re->backend_id != backend_id)
			bpf_map_update_elem(&tendril_lb4_ct, &rev, &entry, BPF_ANY);
	}

	ret = lb4_rewrite(skb, proto, l4_off, false, daddr, be->address, pkt.tuple.dport, be->port);
	if (ret)
		return ret;
	/* Delivery is a stage of its own (nodeport_from_netdev()), for the stack. */
	ep = lookup_ip4_endpoint(be->address);
	return ep && !ep_is_host(ep) ? NODEPORT_TO_LOCAL : NODEPORT_TO_REMOTE;
}

/*
 * The DNATed packet (client -> local backend) into the backend: the client's
 * address stays, the backend's ingress policy sees the client's identity.
 */
static __attribute__((noinline)) int nodeport_to_local(struct __sk_buff *skb)
{
	const struct endpoint_info *ep;
	struct trace_ctx trace;
	struct ct_pkt pkt;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 src_label;
	int ret;

	ret = ipv4_load(skb, &eth, &ip);
	if (IS_ERR(ret))
		return ret;
	ep = lookup_ip4_endpoint(ip->daddr);
	if (!ep || ep_is_host(ep))
		return DROP_NO_SERVICE;
	ret = ct_extract4(skb, ip, &pkt);
	if (IS_ERR(ret))
		return ret;
	src_label = ipcache_identity4(ip->saddr);
	trace_start(skb, ip, TRACE_HOOK_FROM_NETDEV, &trace);
	trace_point(skb, &trace, TRACE_FROM_NETWORK, 0, src_label, ep->sec_id, ep->lxc_id);
	return deliver_to_endpoint4(skb, &trace, &pkt, eth, ip, ep, src_label, ct_now(), DELIVER_ROUTED);
}

/*
 * The DNATed packet (client -> remote backend) on: SNAT to this node, so that
 * the replies come back here, then through the tunnel or routed natively.
 */
static __attribute__((noinline)) int nodeport_to_remote(struct __sk_buff *skb)
{
	const struct remote_endpoint_info *info;
	struct trace_ctx trace;
	struct ct_pkt pkt;
	struct ethhdr *eth;
	struct iphdr *ip;
	__be32 tunnel_endpoint;
	__u32 dst_label;
	int ret;

	ret = ipv4_load(skb, &eth, &ip);
	if (IS_ERR(ret))
		return ret;
	ret = ct_extract4(skb, ip, &pkt);
	if (IS_ERR(ret))
		return ret;
	info = ipcache_lookup4(ip->daddr);
	dst_label = info ? info->sec_identity : IDENTITY_WORLD;
	trace_start(skb, ip, TRACE_HOOK_FROM_NETDEV, &trace);
	trace_point(skb, &trace, TRACE_FROM_NETWORK, 0, ipcache_identity4(ip->saddr), dst_label, 0);
	ret = nodeport_snat(skb, &pkt, ETH_HLEN + ip->ihl * 4, ct_now());
	if (IS_ERR(ret))
		return ret;
	if (tunnel_mode()) {
		tunnel_endpoint = ipcache_tunnel_endpoint(info);
		if (!tunnel_endpoint)
			return DROP_NO_SERVICE;
		ret = encap_and_redirect(skb, tunnel_endpoint, IDENTITY_REMOTE_NODE);
		if (ret == TC_ACT_REDIRECT)
			trace_point(skb, &trace, TRACE_TO_OVERLAY, 0, IDENTITY_REMOTE_NODE, dst_label, 0);
		return ret;
	}
	return nodeport_redirect_out(skb);
}

/*
 * A packet for another address than the node's: a LoadBalancer IP's frontend
 * (LB_F_EXTERNAL) at @port? One lookup (a miss for every other packet).
 */
static __always_inline bool nodeport_lb_ip(__be32 daddr, __be16 port, __u8 proto)
{
	const struct lb4_service *svc;
	struct lb4_key key = {};

	key.address = daddr;
	key.dport = port;
	key.proto = proto;
	svc = bpf_map_lookup_elem(&tendril_lb4_services, &key);
	return svc && (svc->flags & LB_F_EXTERNAL);
}

/*
 * Ingress of the native device, first: NodePort and LoadBalancer IP traffic
 * from outside and the replies of its SNATed connections. Each path is a function of its own, so
 * that the stack frames of the two, and of from_netdev(), are not added up.
 * Returns 0 when the packet is neither (it goes on as before), else a TC
 * verdict or a DROP_* code.
 */
static __attribute__((noinline)) int nodeport_lb4_from_netdev(struct __sk_buff *skb)
{
	struct ethhdr *eth;
	struct iphdr *ip;
	__be16 port;
	__u16 dport;

	__be32 daddr;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return 0;
	if (IS_ERR(ipv4_load(skb, &eth, &ip)))
		return 0;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return 0;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return 0;
	daddr = ip->daddr;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + ip->ihl * 4 + 2, &port, sizeof(port)) < 0)
		return 0;
	if (daddr != CONFIG_NODE_IP4) {
		if (!nodeport_lb_ip(daddr, port, ip->protocol))
			return 0;
		return nodeport_lb4_forward(skb, daddr);
	}
	dport = bpf_ntohs(port);
	if (dport >= CONFIG_NAT_PORT_MIN && dport <= CONFIG_NAT_PORT_MAX)
		return nodeport_rev_snat(skb);
	if (dport < NODEPORT_PORT_MIN || dport > NODEPORT_PORT_MAX)
		return 0;
	return nodeport_lb4_forward(skb, 0);
}

/*
 * What cil_from_netdev runs first (one call there): nodeport_lb4_from_netdev(),
 * then the delivery stage it asks for, each a function of its own so that the
 * stack frames of the stages are not added up.
 */
static __always_inline int nodeport_from_netdev(struct __sk_buff *skb)
{
	int ret = nodeport_lb4_from_netdev(skb);

	if (ret == NODEPORT_TO_LOCAL)
		return nodeport_to_local(skb);
	if (ret == NODEPORT_TO_REMOTE)
		return nodeport_to_remote(skb);
	return ret;
}

/*
 * A local backend's reply to a NodePort client outside (after the backend's
 * egress conntrack and policy, @t: backend -> client): the node IP and node
 * port become its source, and it leaves the native device. A function of its
 * own: the caller's packet pointers stay valid when it returns 0 (no such
 * reply; nothing was changed), else it returns a TC verdict or a DROP_* code.
 */
static __attribute__((noinline)) int nodeport_rev_from_lxc(struct __sk_buff *skb, const struct ct_tuple4 *t)
{
	const struct lb4_ct_entry *re;
	struct ethhdr *eth;
	struct iphdr *ip;
	__be32 addr;
	__be16 port;
	int ret;

	if (t->nexthdr != IPPROTO_TCP && t->nexthdr != IPPROTO_UDP)
		return 0;
	re = nodeport_reply_entry(t->saddr, t->daddr, t->sport, t->dport, t->nexthdr);
	if (!re)
		return 0;
	addr = re->orig_addr;
	port = re->orig_port;
	if (IS_ERR(ipv4_load(skb, &eth, &ip)) || ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return 0;
	ret = lb4_rewrite(skb, t->nexthdr, ETH_HLEN + ip->ihl * 4, true, t->saddr, addr, t->sport, port);
	if (ret)
		return ret;
	/* The kernel's FIB and neighbour lookup (no bpf_fib_lookup params on this stack: the caller's frame is large). */
	return bpf_redirect_neigh(CONFIG_NATIVE_IFINDEX, NULL, 0, 0);
}

#endif /* __TENDRIL_NODEPORT_H_ */
