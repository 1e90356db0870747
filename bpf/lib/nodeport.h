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
 * Each connection has a reply entry in tendril_lb4_ct, dir LB_CT_NODEPORT,
 * keyed by the backend's reply as the backend sends it (backend -> client),
 * holding the node IP and node port the client used.
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
static __always_inline int nodeport_rev_snat(struct __sk_buff *skb, struct ct_pkt *p, __u32 l4_off)
{
	const struct lb4_ct_entry *re;
	struct nat_entry4 *in;
	struct ct_pkt c = *p;
	__be32 client, node = CONFIG_NODE_IP4;
	__be16 client_port, np_port;
	__u8 proto = p->tuple.nexthdr;
	int ret;

	c.tuple.dir = NAT_DIR_IN;
	c.tuple.pad = 0;
	in = bpf_map_lookup_elem(&tendril_snat_v4, &c.tuple);
	if (!in)
		return 0;
	client = in->to_addr;
	client_port = in->to_port;
	re = nodeport_reply_entry(p->tuple.saddr, client, p->tuple.sport, client_port, proto);
	if (!re || re->orig_addr != node)
		return 0;
	np_port = re->orig_port;

	/* The connection's conntrack entry (client -> backend) lives on: the NAT GC keeps the mapping while it does. */
	c.tuple.daddr = client;
	c.tuple.dport = client_port;
	ct_lookup4(&c, CT_INGRESS, ct_now());

	ret = nat_rewrite4(skb, l4_off, proto, IP4_DADDR_OFF, node, client, l4_off + 2, p->tuple.dport, client_port,
			   false);
	if (IS_ERR(ret))
		return ret;
	ret = nat_rewrite4(skb, l4_off, proto, IP4_SADDR_OFF, p->tuple.saddr, node, l4_off, p->tuple.sport, np_port,
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
	if (e && !snat4_syn_port_lost(p, e->to_port)) {
		to_port = e->to_port;
	} else {
		if (e)
			bpf_map_delete_elem(&tendril_snat_v4, &otuple);
		ret = snat4_new(&otuple, &fresh);
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

/*
 * Ingress of the native device, first: NodePort traffic from outside and the
 * replies of its SNATed connections: a function of its own, whose stack
 * frame is not added to from_netdev()'s. Returns 0 when the packet is neither
 * (it goes on as before), else a TC verdict or a DROP_* code.
 */
static __attribute__((noinline)) int nodeport_lb4_from_netdev(struct __sk_buff *skb)
{
	const struct endpoint_info *ep;
	const struct lb4_service *svc;
	const struct lb4_backend *be;
	struct lb4_ct_entry entry = {};
	struct lb4_key key = {};
	struct trace_ctx trace;
	struct ct_tuple4 rev = {};
	struct ct_pkt pkt;
	struct ethhdr *eth;
	struct iphdr *ip;
	__be32 client;
	__u32 backend_id, l4_off, now, src_label;
	__u16 dport;
	__u8 proto;
	int ret;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return 0;
	if (IS_ERR(ipv4_load(skb, &eth, &ip)) || ip->daddr != CONFIG_NODE_IP4)
		return 0;
	proto = ip->protocol;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return 0;
	if (IS_ERR(ct_extract4(skb, ip, &pkt)) || pkt.no_ports)
		return 0;
	l4_off = ETH_HLEN + ip->ihl * 4;
	dport = bpf_ntohs(pkt.tuple.dport);
	if (dport >= CONFIG_NAT_PORT_MIN && dport <= CONFIG_NAT_PORT_MAX)
		return nodeport_rev_snat(skb, &pkt, l4_off);
	if (dport < NODEPORT_PORT_MIN || dport > NODEPORT_PORT_MAX)
		return 0;

	key.dport = pkt.tuple.dport;
	key.proto = proto;
	svc = bpf_map_lookup_elem(&tendril_lb4_services, &key);
	if (!svc)
		return 0;
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
	src_label = ipcache_identity4(client);
	set_src_identity(skb, src_label);
	trace_start(skb, ip, TRACE_HOOK_FROM_NETDEV, &trace);

	be = lb4_sticky_backend(&key, svc, &pkt.tuple, &backend_id);
	if (!be) {
		send_drop_notify_dir(skb, DROP_NO_SERVICE, METRIC_DIR_INGRESS);
		return lb4_no_service_reply(skb, skb->ifindex);
	}

	/* The reply as the backend sends it: backend -> client. */
	rev.saddr = be->address;
	rev.daddr = client;
	rev.sport = be->port;
	rev.dport = pkt.tuple.sport;
	rev.nexthdr = proto;
	rev.dir = LB_CT_NODEPORT;
	entry.backend_id = backend_id;
	entry.rev_nat_index = svc->rev_nat_index;
	entry.orig_addr = CONFIG_NODE_IP4;
	entry.orig_port = pkt.tuple.dport;
	{
		const struct lb4_ct_entry *re = bpf_map_lookup_elem(&tendril_lb4_ct, &rev);

		if (!re || re->rev_nat_index != entry.rev_nat_index || re->orig_addr != entry.orig_addr ||
		    re->orig_port != entry.orig_port || re->backend_id != backend_id)
			bpf_map_update_elem(&tendril_lb4_ct, &rev, &entry, BPF_ANY);
	}

	ret = lb4_rewrite(skb, proto, l4_off, false, CONFIG_NODE_IP4, be->address, pkt.tuple.dport, be->port);
	if (ret)
		return ret;
	pkt.tuple.daddr = be->address;
	pkt.tuple.dport = be->port;
	pkt.policy_dport = be->port;
	ret = ipv4_load(skb, &eth, &ip);
	if (IS_ERR(ret))
		return ret;

	now = ct_now();
	ep = lookup_ip4_endpoint(pkt.tuple.daddr);
	if (ep && !ep_is_host(ep)) {
		/* A local backend: the client's address stays, the backend's ingress policy sees its identity. */
		trace_point(skb, &trace, TRACE_FROM_NETWORK, 0, src_label, ep->sec_id, ep->lxc_id);
		return deliver_to_endpoint4(skb, &trace, &pkt, eth, ip, ep, src_label, now, DELIVER_ROUTED);
	}

	/* A remote backend: from this node's address, so that the replies come back here. */
	trace_point(skb, &trace, TRACE_FROM_NETWORK, 0, src_label, ipcache_identity4(pkt.tuple.daddr), 0);
	ret = nodeport_snat(skb, &pkt, l4_off, now);
	if (IS_ERR(ret))
		return ret;
	if (tunnel_mode()) {
		const struct remote_endpoint_info *info = ipcache_lookup4(pkt.tuple.daddr);
		__be32 tunnel_endpoint = ipcache_tunnel_endpoint(info);

		if (!tunnel_endpoint)
			return DROP_NO_SERVICE;
		ret = encap_and_redirect(skb, tunnel_endpoint, IDENTITY_REMOTE_NODE);
		if (ret == TC_ACT_REDIRECT)
			trace_point(skb, &trace, TRACE_TO_OVERLAY, 0, IDENTITY_REMOTE_NODE, info->sec_identity, 0);
		return ret;
	}
	return nodeport_redirect_out(skb);
}

/*
 * A local backend's reply to a NodePort client outside (after the backend's
 * egress conntrack and policy, @p->tuple: backend -> client): the node IP and
 * node port become its source, and it leaves the native device. Returns 0
 * when the packet is no such reply, else a TC verdict or a DROP_* code.
 */
static __always_inline int nodeport_rev_from_lxc(struct __sk_buff *skb, const struct ct_pkt *p)
{
	const struct lb4_ct_entry *re;
	struct ethhdr *eth;
	struct iphdr *ip;
	__be32 addr;
	__be16 port;
	int ret;

	if (p->tuple.nexthdr != IPPROTO_TCP && p->tuple.nexthdr != IPPROTO_UDP)
		return 0;
	if (p->no_ports || p->icmp_error)
		return 0;
	re = nodeport_reply_entry(p->tuple.saddr, p->tuple.daddr, p->tuple.sport, p->tuple.dport, p->tuple.nexthdr);
	if (!re)
		return 0;
	addr = re->orig_addr;
	port = re->orig_port;
	ret = ipv4_load(skb, &eth, &ip);
	if (IS_ERR(ret))
		return ret;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return 0;
	ret = lb4_rewrite(skb, p->tuple.nexthdr, ETH_HLEN + ip->ihl * 4, true, p->tuple.saddr, addr, p->tuple.sport,
			  port);
	if (ret)
		return ret;
	return nodeport_redirect_out(skb);
}

#endif /* __TENDRIL_NODEPORT_H_ */
