/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* BPF masquerading: source NAT of pod traffic to the world on the native device, and its way back. */
#ifndef __TENDRIL_NAT_H_
#define __TENDRIL_NAT_H_

#include <linux/ip.h>
#include <linux/in.h>

#include "common.h"
#include "config.h"
#include "csum.h"
#include "drop.h"
#include "endpoint.h"
#include "identity.h"
#include "ipcache.h"
#include "ipv4.h"
#include "conntrack.h"
#include "trace.h"
#include "egress.h"

/* trace_key.hook of cil_to_netdev (after trace.h's TRACE_HOOK_*). */
#define TRACE_HOOK_TO_NETDEV	5

/*
 * Two entries per flow in tendril_snat_v4 (Cilium's layout of
 * cilium_snat_v4_external): the OUT entry, keyed by the pod's own tuple,
 * holds the address and port it leaves with; the IN entry, keyed by the
 * reply's tuple as it arrives (world -> node IP:port), holds the pod's
 * address and port it goes back to. The IN entry is the port's reservation:
 * it is created first with BPF_NOEXIST, so two flows never share one. A
 * masquerade flow that keeps the pod's own port has its IN entry alone
 * (NAT_F_SAME_PORT).
 * Sized for 64 Ki flows; the agent removes both entries of a flow whose
 * conntrack entry is gone (src/nat, run with the conntrack GC).
 */
#define NAT_MAP_SIZE		131072
#define NAT_DIR_OUT		0	/* ct_tuple4.dir of an OUT entry */
#define NAT_DIR_IN		1	/* ct_tuple4.dir of an IN entry */
/* Ports tried for a new flow before giving up with DROP_NAT_NO_MAPPING (Cilium's, with the large insn limit). */
#define NAT_COLLISION_RETRIES	128

/*
 * nat_entry4.flags: a masquerade mapping (snat4_egress()), whose replies go
 * to a pod; without it an IN entry is NodePort's (lib/nodeport.h), whose
 * replies need its lb4_ct entry as well, or one made before the flag existed.
 */
#define NAT_F_MASQ		1
/*
 * nat_entry4.flags of an IN entry that is its flow's only entry: a
 * masquerade flow to the node IP that kept the pod's own port (the usual
 * case: a pod's ephemeral port lies in the range). The pod's tuple is the
 * key's reverse (to_addr:to_port -> saddr:sport), so no OUT entry is
 * needed: a new connection costs one map insert, not two, and each of its
 * packets one lookup (snat4_own_port_kept()). The GC keeps such an entry
 * as long as the pod tuple's conntrack entry lives.
 */
#define NAT_F_SAME_PORT		0x8
/* nat_entry4.flags bits 8-15 of a masquerade IN entry to the node IP: its reported replies' TCP flags (snat4_rev_report()). */

struct nat_entry4 {
	__be32	to_addr;	/* OUT: the node IP; IN: the pod's address */
	__be16	to_port;	/* OUT: the translated port; IN: the pod's port (ICMP echo: identifier) */
	__u16	flags;		/* NAT_F_* */
	__u32	created;	/* CLOCK_MONOTONIC seconds */
	/*
	 * CLOCK_MONOTONIC seconds of the last packet, kept for the flows of an
	 * egress IP only (0 else): a gateway has no conntrack entry of another
	 * node's pod's flow, so the agent's NAT GC keeps those by this instead.
	 */
	__u32	last_used;
};

_Static_assert(sizeof(struct nat_entry4) == 16, "nat_entry4 must be 16 bytes");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_tuple4);
	__type(value, struct nat_entry4);
	__uint(max_entries, NAT_MAP_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_snat_v4 SEC(".maps");

/* The ip-masq-agent's non-masquerade CIDRs (Cilium's cilium_ipmasq_v4). */
#define IPMASQ_MAP_SIZE		16384

struct ipmasq_key {
	__u32	prefixlen;
	__be32	ip4;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipmasq_key);
	__type(value, __u8);
	__uint(max_entries, IPMASQ_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_ipmasq SEC(".maps");

#define IP4_CSUM_OFF		(ETH_HLEN + 10)
#define IP4_SADDR_OFF		(ETH_HLEN + 12)
#define IP4_DADDR_OFF		(ETH_HLEN + 16)
/* Identities below this are the cluster's (reserved, pods); from it on, node-local CIDR identities of the world. */
#define IDENTITY_LOCAL_MIN	0x01000001

/*
 * Does pod traffic to @daddr leave with the node's address? Not when it
 * goes to the cluster (a pod, a node: anything the ipcache knows with a
 * cluster identity, remote pod CIDRs included), the native-routing CIDR, or
 * a non-masquerade CIDR of the ip-masq-agent. @dst_label: the destination's
 * identity when true (the trace of the new flow needs no lookup of its own).
 */
static __always_inline bool snat4_needed(__be32 daddr, __u32 *dst_label)
{
	const struct remote_endpoint_info *info;

	if (CONFIG_NATIVE_ROUTING_MASK4 && (daddr & CONFIG_NATIVE_ROUTING_MASK4) == CONFIG_NATIVE_ROUTING_NET4)
		return false;
	info = ipcache_lookup4(daddr);
	*dst_label = info ? info->sec_identity : IDENTITY_WORLD;
	if (info && info->sec_identity < IDENTITY_LOCAL_MIN)
		return false;
	if (CONFIG_IPMASQ) {
		struct ipmasq_key key = { .prefixlen = 32, .ip4 = daddr };

		if (bpf_map_lookup_elem(&tendril_ipmasq, &key))
			return false;
	}
	return true;
}

/* Checksum @check after the 32-bit word @old (network order) became @new. */
static __always_inline __sum16 csum_replace4(__sum16 check, __be32 old, __be32 new)
{
	check = csum_replace2(check, (__be16)(old & 0xffff), (__be16)(new & 0xffff));
	return csum_replace2(check, (__be16)(old >> 16), (__be16)(new >> 16));
}

/*
 * Rewrite one end of a TCP, UDP or ICMP echo packet: the IPv4 address at
 * @addr_off from @old_addr to @new_addr, and unless @l3_only (a later
 * fragment) the port (ICMP: echo identifier) at @port_off from @old_port to
 * @new_port, with the IPv4 and L4 checksums fixed incrementally.
 */
static __always_inline int nat_rewrite4(struct __sk_buff *skb, __u32 l4_off, __u8 proto, __u32 addr_off,
					__be32 old_addr, __be32 new_addr, __u32 port_off, __be16 old_port,
					__be16 new_port, bool l3_only)
{
	__u32 csum_off, flags = 0;

	switch (proto) {
	case IPPROTO_TCP:
		csum_off = l4_off + 16;
		break;
	case IPPROTO_UDP:
		csum_off = l4_off + 6;
		/* A UDP checksum of 0 is "none" and stays so; a computed 0 becomes 0xffff. */
		flags = BPF_F_MARK_MANGLED_0;
		break;
	case IPPROTO_ICMP:
		csum_off = l4_off + 2;
		break;
	default:
		return DROP_NAT_UNSUPP_PROTO;
	}
	if (bpf_l3_csum_replace(skb, IP4_CSUM_OFF, old_addr, new_addr, 4) < 0)
		return DROP_CSUM_L3;
	if (!l3_only) {
		/* TCP and UDP checksums cover the addresses through the pseudo header; ICMP's does not. */
		if (proto != IPPROTO_ICMP &&
		    bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr, flags | BPF_F_PSEUDO_HDR | 4) < 0)
			return DROP_CSUM_L4;
		if (old_port != new_port) {
			if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, flags | 2) < 0)
				return DROP_CSUM_L4;
			if (bpf_skb_store_bytes(skb, port_off, &new_port, 2, 0) < 0)
				return DROP_WRITE_ERROR;
		}
	}
	if (bpf_skb_store_bytes(skb, addr_off, &new_addr, 4, 0) < 0)
		return DROP_WRITE_ERROR;
	return 0;
}

static __always_inline __u16 nat_random_port(void)
{
	__u32 range = CONFIG_NAT_PORT_MAX - CONFIG_NAT_PORT_MIN + 1;

	return CONFIG_NAT_PORT_MIN + bpf_get_prandom_u32() % range;
}

#define TCP_F_ACK		0x10

/* An egress IP's flow was used now (nat_entry4.last_used): written once a second at most. */
/*
 * nat_entry4.flags: a FIN or an RST went through this way. A gateway has no
 * conntrack entry of another node's pod's flow, so its NAT GC tells a closed
 * TCP flow (FIN both ways, or an RST) by these and frees it after the
 * closing timeout instead of the established one.
 */
#define NAT_F_FIN	0x2
#define NAT_F_RST	0x4

static __always_inline void nat_touch(struct nat_entry4 *e, struct __sk_buff *skb, __u8 proto, __u32 l4_off)
{
	__u32 now = ct_now();
	__u16 f = e->flags, nf = f;
	__u8 tcp_flags;

	/* The flags byte of the TCP header, read here: egress IP flows only pay for it. */
	if (proto == IPPROTO_TCP && bpf_skb_load_bytes(skb, l4_off + 13, &tcp_flags, 1) == 0) {
		/* A new connection on the tuple (a bare SYN) starts open again. */
		if ((tcp_flags & (TCP_F_SYN | TCP_F_ACK)) == TCP_F_SYN)
			nf &= ~(NAT_F_FIN | NAT_F_RST);
		if (tcp_flags & TCP_F_FIN)
			nf |= NAT_F_FIN;
		if (tcp_flags & TCP_F_RST)
			nf |= NAT_F_RST;
		if (nf != f)
			e->flags = nf;
	}
	if (e->last_used != now)
		e->last_used = now;
}

/* Seconds a closed TCP flow stays quiet before its port is taken over (snat4_flow_dead()). */
#define NAT_CLOSED_GRACE	2

/* snat4_new(): another CPU made the flow's entries meanwhile. */
#define NAT_RACED	1

/*
 * Is the flow that holds the IN entry @rtuple -> @rs over? Its conntrack
 * entry (the pod's egress tuple, from which the OUT entry's key is made as
 * well) is gone, expired, or a TCP flow closed both ways (FIN each way, or
 * RST) a while ago. Such a flow's port is free for a new one before the GC comes by.
 */
static __always_inline bool snat4_flow_dead(const struct ct_tuple4 *rtuple, __be32 pod, __be16 pod_port, __u32 now)
{
	struct ct_tuple4 t = {};
	struct ct_entry *e;

	t.saddr = pod;
	t.daddr = rtuple->saddr;
	t.sport = pod_port;
	t.dport = rtuple->sport;
	t.nexthdr = rtuple->nexthdr;
	t.dir = CT_EGRESS;
	e = bpf_map_lookup_elem(ct_map(t.nexthdr), &t);
	if (!e || !ct_alive(e, now))
		return true;
	/*
	 * Closed, and quiet for NAT_CLOSED_GRACE seconds (its lifetime is its
	 * last packet + the closing timeout): the last ACK of the close has
	 * reached the far end, which would otherwise still hold the old
	 * connection on this port and answer the new flow's SYN with an ACK.
	 */
	return t.nexthdr == IPPROTO_TCP &&
	       (e->flags & (CT_F_RX_CLOSING | CT_F_TX_CLOSING)) == (CT_F_RX_CLOSING | CT_F_TX_CLOSING) &&
	       e->lifetime + NAT_CLOSED_GRACE <= now + CONFIG_CT_TIMEOUT_TCP_FIN;
}

/*
 * An egress IP's flow may be another node's pod's, with no conntrack entry
 * here: is it over by its NAT entries @oe (OUT) and @ie (IN), as the agent's
 * NAT GC tells (src/datapath/nat.ts, egressFlowInUse())? Its last packet
 * either way (last_used, created before the first) is older than the idle
 * timeout of its protocol: a TCP flow seen closed (an RST either way, or a
 * FIN each way: NAT_F_*) by NAT_CLOSED_GRACE, as a closed flow of the node
 * IP; an open one by the established timeout, not the non-TCP one (an idle
 * keep-alive connection keeps its port); anything else by the non-TCP one.
 * A flow closing one way only is open.
 */
static __always_inline bool snat4_egress_flow_quiet(const struct nat_entry4 *oe, const struct nat_entry4 *ie,
						    __u8 proto, __u32 now)
{
	__u32 last = oe->created, timeout = CONFIG_CT_TIMEOUT_ANY;

	if (oe->last_used > last)
		last = oe->last_used;
	if (ie->created > last)
		last = ie->created;
	if (ie->last_used > last)
		last = ie->last_used;
	if (proto == IPPROTO_TCP) {
		if (((oe->flags | ie->flags) & NAT_F_RST) || ((oe->flags & NAT_F_FIN) && (ie->flags & NAT_F_FIN)))
			timeout = NAT_CLOSED_GRACE;
		else
			timeout = CONFIG_CT_TIMEOUT_TCP;
	}
	return now - last > timeout;
}

/*
 * The port of the IN entry @rtuple is held: by @otuple's own flow whose OUT
 * entry was lost (then it is the flow's again), or by a dead flow (then it
 * is taken over). Returns 0 when the port is @otuple's now, NAT_RACED when
 * another CPU made the flow's entry meanwhile, -1 when the port stays taken.
 *
 * Taking over is atomic through the dead flow's OUT entry: only the CPU
 * whose delete of it succeeds rewrites the IN entry, so two new flows never
 * both win one port. A dead flow's IN entry without its OUT entry (LRU
 * eviction, or the GC half-way) is left to the GC.
 */
static __always_inline int snat4_take_over(const struct ct_tuple4 *otuple, const struct ct_tuple4 *rtuple,
					   const struct nat_entry4 *rstate, const struct nat_entry4 *ostate, __u32 now)
{
	struct ct_tuple4 old = {};
	struct nat_entry4 *e, *oe;
	__be32 pod;
	__be16 pod_port;
	bool alone = rstate->flags & NAT_F_SAME_PORT;

	e = bpf_map_lookup_elem(&tendril_snat_v4, rtuple);
	if (!e)
		return -1;
	pod = e->to_addr;
	pod_port = e->to_port;
	if (pod == otuple->saddr && pod_port == otuple->sport) {
		alone = e->flags & NAT_F_SAME_PORT;
		goto out_entry;
	}
	if (e->flags & NAT_F_SAME_PORT) {
		/* The dead flow's only entry: the CPU whose delete of it succeeds takes the port. */
		if (!snat4_flow_dead(rtuple, pod, pod_port, now))
			return -1;
		if (bpf_map_delete_elem(&tendril_snat_v4, rtuple) != 0)
			return -1;
		if (bpf_map_update_elem(&tendril_snat_v4, rtuple, rstate, BPF_NOEXIST) != 0)
			return -1;
		goto out_entry;
	}
	old.saddr = pod;
	old.daddr = rtuple->saddr;
	old.sport = pod_port;
	old.dport = rtuple->sport;
	old.nexthdr = rtuple->nexthdr;
	old.dir = NAT_DIR_OUT;
	oe = bpf_map_lookup_elem(&tendril_snat_v4, &old);
	/* The dead flow's tuple may have been reopened with another port: then this IN entry is no longer its. */
	if (!oe || oe->to_port != rtuple->dport || oe->to_addr != rtuple->daddr)
		return -1;
	if (rtuple->daddr != CONFIG_NODE_IP4 && !snat4_egress_flow_quiet(oe, e, rtuple->nexthdr, now))
		return -1;
	if (!snat4_flow_dead(rtuple, pod, pod_port, now))
		return -1;
	if (bpf_map_delete_elem(&tendril_snat_v4, &old) != 0)
		return -1;	/* another CPU took it over first */
	if (bpf_map_update_elem(&tendril_snat_v4, rtuple, rstate, BPF_ANY) != 0)
		return -1;
out_entry:
	if (alone || bpf_map_update_elem(&tendril_snat_v4, otuple, ostate, BPF_NOEXIST) == 0)
		return 0;
	return NAT_RACED;
}

/*
 * A new flow @otuple (the pod's, dir NAT_DIR_OUT): reserve a port of the
 * range for it towards its destination, trying its own port first (a pod's
 * ephemeral port usually lies in the range, and then stays), then random
 * ones; a port held by a dead flow is taken over (snat4_take_over()), so
 * that churn of short connections does not exhaust the range between two
 * GC runs. Fills @res with the OUT entry and returns 0, returns NAT_RACED
 * when another CPU made the flow's entry meanwhile, or DROP_NAT_NO_MAPPING.
 */
static __always_inline int snat4_new(const struct ct_tuple4 *otuple, __be32 nat_addr, __u16 flags,
				     struct nat_entry4 *res)
{
	struct nat_entry4 ostate = {}, rstate = {};
	struct ct_tuple4 rtuple = {};
	__u32 now = ct_now();
	__u16 port = bpf_ntohs(otuple->sport);
	bool alone;
	int i, ret;

	rtuple.saddr = otuple->daddr;
	rtuple.daddr = nat_addr;
	rtuple.sport = otuple->dport;
	rtuple.nexthdr = otuple->nexthdr;
	rtuple.dir = NAT_DIR_IN;
	rstate.to_addr = otuple->saddr;
	rstate.to_port = otuple->sport;
	rstate.created = now;
	ostate.to_addr = nat_addr;
	ostate.created = now;
	ostate.flags = flags;
	if (port < CONFIG_NAT_PORT_MIN || port > CONFIG_NAT_PORT_MAX)
		port = nat_random_port();
	for (i = 0; i < NAT_COLLISION_RETRIES; i++) {
		rtuple.dport = bpf_htons(port);
		ostate.to_port = rtuple.dport;
		/* The pod's own port to the node IP: the IN entry alone (NAT_F_SAME_PORT). */
		alone = (flags & NAT_F_MASQ) && nat_addr == CONFIG_NODE_IP4 && rtuple.dport == otuple->sport;
		rstate.flags = alone ? flags | NAT_F_SAME_PORT : flags;
		if (bpf_map_update_elem(&tendril_snat_v4, &rtuple, &rstate, BPF_NOEXIST) == 0) {
			if (alone || bpf_map_update_elem(&tendril_snat_v4, otuple, &ostate, BPF_NOEXIST) == 0) {
				*res = ostate;
				return 0;
			}
			/* Another CPU translated the same flow meanwhile: its entry is the one. */
			bpf_map_delete_elem(&tendril_snat_v4, &rtuple);
			return NAT_RACED;
		}
		ret = snat4_take_over(otuple, &rtuple, &rstate, &ostate, now);
		if (ret >= 0) {
			*res = ostate;
			return ret;
		}
		port = nat_random_port();
	}
	return DROP_NAT_NO_MAPPING;
}

/*
 * A TCP SYN (a new connection) on a tuple with a mapping to @port, whose IN
 * entry is gone or another flow's (an LRU eviction made the port free and a
 * new flow took it): the tuple must not keep a port it no longer holds, or
 * its replies reach the other flow. Checked on SYNs only, a lookup spared
 * every other packet.
 */
static __always_inline bool snat4_syn_port_lost(const struct ct_pkt *p, __be32 addr, __be16 port)
{
	struct ct_tuple4 rt = {};
	struct nat_entry4 *in;

	if (p->tuple.nexthdr != IPPROTO_TCP || (p->tcp_flags & (TCP_F_SYN | TCP_F_ACK)) != TCP_F_SYN)
		return false;
	rt.saddr = p->tuple.daddr;
	rt.daddr = addr;
	rt.sport = p->tuple.dport;
	rt.dport = port;
	rt.nexthdr = IPPROTO_TCP;
	rt.dir = NAT_DIR_IN;
	in = bpf_map_lookup_elem(&tendril_snat_v4, &rt);
	return !in || in->to_addr != p->tuple.saddr || in->to_port != p->tuple.sport;
}

/*
 * A UDP packet on a tuple with a mapping to @port: is the mapping's IN entry
 * (the way back) still there? An LRU eviction or a GC run half-way may have
 * taken it while the flow lives on; it is made again with the same port
 * when that is free, so the far end keeps seeing one source. Returns false
 * when the port is another flow's now: then the tuple gets a new mapping.
 * UDP only: a lost TCP flow's port is checked on its next SYN
 * (snat4_syn_port_lost()), UDP has no such packet.
 */
static __always_inline bool snat4_udp_port_kept(const struct ct_pkt *p, __be32 addr, __be16 port)
{
	struct nat_entry4 *in, rstate = {};
	struct ct_tuple4 rt = {};

	rt.saddr = p->tuple.daddr;
	rt.daddr = addr;
	rt.sport = p->tuple.dport;
	rt.dport = port;
	rt.nexthdr = IPPROTO_UDP;
	rt.dir = NAT_DIR_IN;
	in = bpf_map_lookup_elem(&tendril_snat_v4, &rt);
	if (in)
		return in->to_addr == p->tuple.saddr && in->to_port == p->tuple.sport;
	rstate.to_addr = p->tuple.saddr;
	rstate.to_port = p->tuple.sport;
	rstate.created = ct_now();
	rstate.flags = NAT_F_MASQ;
	if (bpf_map_update_elem(&tendril_snat_v4, &rt, &rstate, BPF_NOEXIST) == 0)
		return true;
	/* Another CPU made it meanwhile: for this flow (the same packet's twin), or a new flow took the port. */
	in = bpf_map_lookup_elem(&tendril_snat_v4, &rt);
	return in && in->to_addr == p->tuple.saddr && in->to_port == p->tuple.sport;
}

/*
 * Does the pod's flow @p keep its own port towards the node IP, through an
 * IN entry of its own alone (NAT_F_SAME_PORT)? One lookup, in place of the
 * OUT entry's: also the way back's check (snat4_syn_port_lost(),
 * snat4_udp_port_kept()), as the IN entry is the one looked up.
 */
static __always_inline bool snat4_own_port_kept(const struct ct_pkt *p)
{
	struct ct_tuple4 rt = {};
	struct nat_entry4 *in;

	rt.saddr = p->tuple.daddr;
	rt.daddr = CONFIG_NODE_IP4;
	rt.sport = p->tuple.dport;
	rt.dport = p->tuple.sport;
	rt.nexthdr = p->tuple.nexthdr;
	rt.dir = NAT_DIR_IN;
	in = bpf_map_lookup_elem(&tendril_snat_v4, &rt);
	return in && (in->flags & NAT_F_SAME_PORT) && in->to_addr == p->tuple.saddr && in->to_port == p->tuple.sport;
}

/*
 * Whether @p (a local pod's packet, no NAT mapping) answers a flow that
 * entered the pod from outside, to its own address (a router with a route to
 * the pod CIDR, the node's stack forwarding): the pod's ingress conntrack
 * entry. One lookup, paid only by packets that would otherwise get a new
 * mapping; such a reply translated would reach a client that never spoke
 * to the node's address.
 */
static __always_inline bool snat4_is_inbound_reply(const struct ct_pkt *p)
{
	struct ct_tuple4 rev;
	const struct ct_entry *e;

	if (p->no_ports || p->icmp_error)
		return false;
	ct_reverse(&rev, &p->tuple, CT_INGRESS);
	e = bpf_map_lookup_elem(ct_map(rev.nexthdr), &rev);
	return e && ct_alive(e, ct_now());
}

/*
 * cil_to_netdev's trace of a packet: none when from-container traced it
 * to-network already (MARK_MAGIC_TRACED_NET, native routing), which also
 * spares the aggregation lookup.
 */
static __always_inline void snat4_trace_start(struct __sk_buff *skb, const struct iphdr *ip, bool traced,
					      struct trace_ctx *trace)
{
	if (traced)
		trace->report = false;
	else
		trace_start(skb, ip, TRACE_HOOK_TO_NETDEV, trace);
}

/* First byte of an ICMP header as ct_extract4() kept it (policy_dport holds type and code as on the wire). */
static __always_inline __u8 nat_icmp_type(const struct ct_pkt *p)
{
	return ((const __u8 *)&p->policy_dport)[0];
}

/*
 * Egress of the native device: a local pod's packet to the world leaves
 * with the node's IP and a port of the range (ICMP echo: identifier).
 * A translated packet is traced as to-network as the pod sent it (the agent
 * adds the translated source from the NAT entry).
 * Returns TC_ACT_OK, or a DROP_* code: no port left (DROP_NAT_NO_MAPPING),
 * or a protocol that cannot be translated (DROP_NAT_UNSUPP_PROTO: anything
 * but TCP, UDP and ICMP echo requests), which must not leave with the pod's
 * address either.
 */
static __always_inline int snat4_egress(struct __sk_buff *skb)
{
	const struct endpoint_info *ep;
	struct nat_entry4 *e, fresh;
	struct trace_ctx trace;
	struct ct_pkt pkt;
	__u32 sec_id, dst_label = 0;
	__u16 lxc_id;
	struct ethhdr *eth;
	struct iphdr *ip;
	__be32 saddr, to_addr, nat_addr;
	__be16 to_port;
	__u32 l4_off;
	bool later_frag, traced, local;
	__u8 proto;
	int ret;

	if (!CONFIG_MASQ)
		return TC_ACT_OK;
	traced = (skb->mark & MARK_MAGIC_TRACE_MASK) == MARK_MAGIC_TRACED_NET;
	if (traced)
		skb->mark = 0;
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if (IS_ERR(ipv4_load(skb, &eth, &ip)))
		return TC_ACT_OK;
	saddr = ip->saddr;
	if (saddr == CONFIG_NODE_IP4)
		return TC_ACT_OK;
	/* The native-routing CIDR costs no lookup: cross-node pod traffic leaves before any. */
	if (CONFIG_NATIVE_ROUTING_MASK4 && (ip->daddr & CONFIG_NATIVE_ROUTING_MASK4) == CONFIG_NATIVE_ROUTING_NET4)
		return TC_ACT_OK;
	/*
	 * A packet from-container traced (MARK_MAGIC_TRACED_NET) is a local
	 * pod's, whose source it checked: no endpoint lookup (the endpoint
	 * serves the trace only, which such a packet does not get here).
	 */
	if (traced) {
		ep = NULL;
		local = true;
	} else {
		ep = lookup_ip4_endpoint(saddr);
		if (ep && ep_is_host(ep))
			return TC_ACT_OK;
		local = ep != NULL;
	}
	/* An egress gateway policy's traffic (a pod here, or one of another node tunnelled here) leaves with its egress IP (lib/egress.h). */
	nat_addr = egress_gw_snat_addr4(saddr, ip->daddr);
	if (nat_addr == EGRESS_GW_ELSEWHERE)
		return local ? TC_ACT_OK : egress_gw_not_here4();
	if (!nat_addr) {
		if (!local)
			return TC_ACT_OK;
		nat_addr = CONFIG_NODE_IP4;
	}
	/* Scalars only from here on (their values decide nothing, so the verifier's states merge). */
	lxc_id = ep ? ep->lxc_id : 0;
	sec_id = ep ? ep->sec_id : IDENTITY_UNKNOWN;
	proto = ip->protocol;
	l4_off = ETH_HLEN + ip->ihl * 4;
	later_frag = ip->frag_off & bpf_htons(IP_OFFSET);

	/*
	 * A flow's existing mapping first: it was made only for a destination
	 * that needed it, so a hit spares every packet after the first the
	 * ipcache and ip-masq-agent LPM lookups of snat4_needed().
	 */
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_ICMP) {
		ret = ct_extract4(skb, ip, &pkt);
		if (IS_ERR(ret))
			return ret;
		if (!pkt.no_ports && !pkt.icmp_error) {
			if (nat_addr == CONFIG_NODE_IP4 && snat4_own_port_kept(&pkt)) {
				to_addr = nat_addr;
				to_port = pkt.tuple.sport;
				snat4_trace_start(skb, ip, traced, &trace);
				goto rewrite;
			}
			pkt.tuple.dir = NAT_DIR_OUT;
			e = bpf_map_lookup_elem(&tendril_snat_v4, &pkt.tuple);
			if (e) {
				/* Values copied out: a pointer merged from map value and stack trips the verifier. */
				to_addr = e->to_addr;
				to_port = e->to_port;
				if (to_addr != CONFIG_NODE_IP4)
					nat_touch(e, skb, proto, l4_off);
				if (proto == IPPROTO_UDP ? snat4_udp_port_kept(&pkt, to_addr, to_port)
							 : !snat4_syn_port_lost(&pkt, to_addr, to_port)) {
					snat4_trace_start(skb, ip, traced, &trace);
					goto rewrite;
				}
				/* A new connection on the tuple, whose port is no longer its: a new mapping. */
				bpf_map_delete_elem(&tendril_snat_v4, &pkt.tuple);
			}
		}
	}
	if (!snat4_needed(ip->daddr, &dst_label))
		return TC_ACT_OK;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_ICMP)
		return DROP_NAT_UNSUPP_PROTO;
	/* A local pod answering a connection the outside opened to its own address keeps that address. */
	if (local && snat4_is_inbound_reply(&pkt))
		return TC_ACT_OK;
	if (pkt.no_ports)
		return DROP_NAT_NO_MAPPING;
	if (proto == IPPROTO_ICMP && (pkt.icmp_error || nat_icmp_type(&pkt) != ICMP_ECHO))
		return DROP_NAT_UNSUPP_PROTO;

	snat4_trace_start(skb, ip, traced, &trace);
	pkt.tuple.dir = NAT_DIR_OUT;
	{
		ret = snat4_new(&pkt.tuple, nat_addr, NAT_F_MASQ, &fresh);
		if (IS_ERR(ret))
			return ret;
		to_addr = fresh.to_addr;
		to_port = fresh.to_port;
		if (ret == NAT_RACED) {
			e = bpf_map_lookup_elem(&tendril_snat_v4, &pkt.tuple);
			if (!e)
				return DROP_NAT_NO_MAPPING;
			to_addr = e->to_addr;
			to_port = e->to_port;
		}
	}
rewrite:
	/* The destination's identity only for a reported packet: an LPM lookup saved on every other one. */
	if (trace.report) {
		/* A tunnelled pod's identity (an egress gateway's flow) for a reported packet only: an LPM lookup. */
		if (sec_id == IDENTITY_UNKNOWN)
			sec_id = ipcache_identity4(saddr);
		trace_point(skb, &trace, TRACE_TO_NETWORK, lxc_id, sec_id,
			    dst_label ? dst_label : ipcache_identity4(pkt.tuple.daddr), 0);
	}
	ret = nat_rewrite4(skb, l4_off, proto, IP4_SADDR_OFF, saddr, to_addr,
			   proto == IPPROTO_ICMP ? l4_off + 4 : l4_off, pkt.tuple.sport, to_port, later_frag);
	return IS_ERR(ret) ? ret : TC_ACT_OK;
}

/*
 * An ICMP error to @node (the node IP, or an egress IP this node is the
 * gateway of) about a packet a pod sent through the NAT (@p->inner:
 * @node:port -> world): the error goes to the pod, quoting
 * the packet as the pod sent it. Rewrites the outer destination, the
 * quoted source address and port (identifier), the quoted IPv4 checksum
 * and, when the quoted 8 bytes hold it (UDP, ICMP), the quoted L4 checksum;
 * the ICMP checksum follows every change. Returns 1 when translated, 0
 * when the error is about no translated flow.
 */
static __always_inline int snat4_rev_icmp_error(struct __sk_buff *skb, const struct ct_pkt *p, __u32 l4_off,
						__be32 node)
{
	const __u32 icmp_csum_off = l4_off + 2, inner_off = l4_off + 8;
	struct ct_tuple4 rt = {};
	struct nat_entry4 *e;
	struct iphdr inner;
	__be32 pod;
	__be16 port, old_port = p->inner.sport;
	__u32 inner_l4, port_off, l4c_off = 0;
	__sum16 check, l4c;
	int ret;

	if (p->inner.saddr != node)
		return 0;
	rt.saddr = p->inner.daddr;
	rt.daddr = node;
	rt.sport = p->inner.dport;
	rt.dport = p->inner.sport;
	rt.nexthdr = p->inner.nexthdr;
	rt.dir = NAT_DIR_IN;
	e = bpf_map_lookup_elem(&tendril_snat_v4, &rt);
	if (!e)
		return 0;
	pod = e->to_addr;
	port = e->to_port;
	if (bpf_skb_load_bytes(skb, inner_off, &inner, sizeof(inner)) < 0)
		return DROP_INVALID;
	inner_l4 = inner_off + inner.ihl * 4;
	switch (p->inner.nexthdr) {
	case IPPROTO_TCP:
		port_off = inner_l4;
		break;
	case IPPROTO_UDP:
		port_off = inner_l4;
		l4c_off = inner_l4 + 6;
		break;
	case IPPROTO_ICMP:
		port_off = inner_l4 + 4;
		l4c_off = inner_l4 + 2;
		break;
	default:
		return 0;
	}

	/* The outer destination: the node IP becomes the pod's. */
	if (bpf_l3_csum_replace(skb, IP4_CSUM_OFF, node, pod, 4) < 0)
		return DROP_CSUM_L3;
	if (bpf_skb_store_bytes(skb, IP4_DADDR_OFF, &pod, 4, 0) < 0)
		return DROP_WRITE_ERROR;
	/* The quoted source, and the quoted header's checksum over it. */
	check = csum_replace4(inner.check, node, pod);
	if (bpf_l4_csum_replace(skb, icmp_csum_off, node, pod, 4) < 0 ||
	    bpf_l4_csum_replace(skb, icmp_csum_off, inner.check, check, 2) < 0)
		return DROP_CSUM_L4;
	if (bpf_skb_store_bytes(skb, inner_off + 12, &pod, 4, 0) < 0 ||
	    bpf_skb_store_bytes(skb, inner_off + 10, &check, 2, 0) < 0)
		return DROP_WRITE_ERROR;
	/* The quoted L4 checksum, when quoted (UDP's 0 = none stays). */
	if (l4c_off && bpf_skb_load_bytes(skb, l4c_off, &l4c, 2) == 0 && l4c) {
		__sum16 nl4c = csum_replace2(l4c, old_port, port);

		if (p->inner.nexthdr == IPPROTO_UDP)
			nl4c = csum_replace4(nl4c, node, pod);
		ret = bpf_l4_csum_replace(skb, icmp_csum_off, l4c, nl4c, 2);
		if (ret < 0)
			return DROP_CSUM_L4;
		if (bpf_skb_store_bytes(skb, l4c_off, &nl4c, 2, 0) < 0)
			return DROP_WRITE_ERROR;
	}
	/* The quoted source port (identifier). */
	if (old_port != port) {
		if (bpf_l4_csum_replace(skb, icmp_csum_off, old_port, port, 2) < 0)
			return DROP_CSUM_L4;
		if (bpf_skb_store_bytes(skb, port_off, &port, 2, 0) < 0)
			return DROP_WRITE_ERROR;
	}
	return 1;
}

/*
 * The trace aggregation of a translated reply (from-network at
 * cil_from_netdev), kept in its IN entry rather than in tendril_trace_agg: the
 * entry is looked up for the translation anyway, so an established flow's
 * reply costs no aggregation lookup, and a new flow's first reply no
 * aggregation insert. The IN entry of a flow to the node IP keeps in
 * last_used the second of its last reported reply (unused for such a flow
 * otherwise: nat_touch() stamps egress IP flows only; a reported packet was
 * one of the flow's, so the GC's idle rule reading it stays true), and in
 * the high byte of flags the TCP flags reported so far (NAT_F_TRACE_SHIFT).
 * Reported as trace_check() does: the first reply, one with a TCP flag
 * (TRACE_TCP_FLAGS) not reported before, and at least every
 * TRACE_REPORT_INTERVAL_NS; always as a reply (the pod's packet made the
 * entry). An egress IP's flow (last_used is its activity, flags its close)
 * keeps the aggregation map.
 */
#define NAT_TRACE_INTERVAL_S	(TRACE_REPORT_INTERVAL_NS / NSEC_PER_SEC)
#define NAT_F_TRACE_SHIFT	8

static __always_inline int snat4_rev_report(struct nat_entry4 *e, const struct ct_pkt *p, __u32 now)
{
	__u16 flags = e->flags, seen = (__u16)(p->tcp_flags & TRACE_TCP_FLAGS) << NAT_F_TRACE_SHIFT;

	if (!CONFIG_EVENTS)
		return 0;
	if ((flags | seen) == flags && now - e->last_used < NAT_TRACE_INTERVAL_S)
		return 0;
	if ((flags | seen) != flags)
		e->flags = flags | seen;
	e->last_used = now;
	return 1;
}

/* snat4_rev(): what it did with the packet (DROP_* codes below zero). */
#define SNAT_REV_NONE		0	/* no reply of a masqueraded flow; *pkt undefined */
#define SNAT_REV_PKT		1	/* translated: *pkt is the packet as it is now, addressed to the pod */
#define SNAT_REV_DONE		2	/* translated (an ICMP error): *pkt undefined */
#define SNAT_REV_UNFLAGGED	3	/* an IN entry without NAT_F_MASQ: nothing changed, NodePort's turn first */
#define SNAT_REV_PKT_REPORT	4	/* as SNAT_REV_PKT, and the reply is reported (snat4_rev_report()) */

/* from_netdev()'s @report: the delivery decides by tendril_trace_agg (trace_start()), else 0 or 1 (snat4_rev_report()). */
#define SNAT_REV_TRACE_HERE	-1

/*
 * Ingress of the native device, before anything else: a reply to a
 * translated flow (or an ICMP error about one) is given the pod's address
 * and port back, so that the pod's conntrack and ingress policy see the
 * flow as it sent it. The packet is parsed once here, into @pkt, and the
 * tuple is kept up to date with the rewrite, so that the delivery to the
 * pod (host.c's from_netdev()) neither parses it again nor looks the flow
 * up twice. An IN entry without NAT_F_MASQ is left to NodePort. Returns
 * SNAT_REV_* or a DROP_* code; with SNAT_REV_PKT(_REPORT) the trace decision
 * is made as well (snat4_rev_report()).
 * A function of its own: its frame is not added to the delivery's.
 */
static __attribute__((noinline)) int snat4_rev(struct __sk_buff *skb, struct ct_pkt *pkt)
{
	struct nat_entry4 *e;
	struct ethhdr *eth;
	struct iphdr *ip;
	__be32 to_addr, node = CONFIG_NODE_IP4;
	__be16 to_port, port;
	__u32 l4_off;
	bool later_frag;
	__u8 proto;
	int ret, report = 0;

	if (!CONFIG_MASQ || skb->protocol != bpf_htons(ETH_P_IP))
		return SNAT_REV_NONE;
	if (IS_ERR(ipv4_load(skb, &eth, &ip)))
		return SNAT_REV_NONE;
	/* Replies come to the node IP, or to an egress IP this node is the gateway of (lib/egress.h). */
	if (ip->daddr != node) {
		if (!egress_gw_local_ip4(ip->daddr))
			return SNAT_REV_NONE;
		node = ip->daddr;
	}
	proto = ip->protocol;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_ICMP)
		return SNAT_REV_NONE;
	if (IS_ERR(ct_extract4(skb, ip, pkt)) || pkt->no_ports)
		return SNAT_REV_NONE;
	l4_off = ETH_HLEN + ip->ihl * 4;
	later_frag = ip->frag_off & bpf_htons(IP_OFFSET);
	if (pkt->icmp_error) {
		ret = snat4_rev_icmp_error(skb, pkt, l4_off, node);
		return ret == 1 ? SNAT_REV_DONE : ret;
	}
	if (proto == IPPROTO_ICMP && nat_icmp_type(pkt) != ICMP_ECHOREPLY)
		return SNAT_REV_NONE;

	/* Every mapping's port (ICMP: identifier) lies in the NAT range, so anything
	 * else — VXLAN to the node, the node's own connections — is no reply of
	 * ours and costs no lookup. */
	port = pkt->tuple.dport;
	if (bpf_ntohs(port) < CONFIG_NAT_PORT_MIN || bpf_ntohs(port) > CONFIG_NAT_PORT_MAX)
		return SNAT_REV_NONE;
	pkt->tuple.dir = NAT_DIR_IN;
	e = bpf_map_lookup_elem(&tendril_snat_v4, &pkt->tuple);
	if (!e)
		return SNAT_REV_NONE;
	if (!(e->flags & NAT_F_MASQ))
		return SNAT_REV_UNFLAGGED;
	to_addr = e->to_addr;
	to_port = e->to_port;
	if (node != CONFIG_NODE_IP4)
		nat_touch(e, skb, proto, l4_off);
	else
		report = snat4_rev_report(e, pkt, ct_now());
	ret = nat_rewrite4(skb, l4_off, proto, IP4_DADDR_OFF, node, to_addr,
			   proto == IPPROTO_ICMP ? l4_off + 4 : l4_off + 2, port, to_port, later_frag);
	if (IS_ERR(ret))
		return ret;
	/* The tuple as ct_extract4() would read it now (a later fragment: its datagram's ports, translated). */
	pkt->tuple.daddr = to_addr;
	pkt->tuple.dport = to_port;
	if (proto != IPPROTO_ICMP)
		pkt->policy_dport = to_port;
	pkt->tuple.dir = 0;
	return report ? SNAT_REV_PKT_REPORT : SNAT_REV_PKT;
}

#endif /* __TENDRIL_NAT_H_ */
