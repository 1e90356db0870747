/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* L7 proxy redirect: policy-selected TCP steered to the node proxy with bpf_sk_assign, and its upstream replies back. */
#ifndef __TENDRIL_PROXY_H_
#define __TENDRIL_PROXY_H_

#include "common.h"
#include "drop.h"
#include "events.h"
#include "trace.h"
#include "conntrack.h"

/*
 * Why socket assignment and not TPROXY: it needs no iptables/nft rule in the
 * node (nothing outside our own programs and maps decides where a connection
 * goes), and the program that made the verdict also picks the socket, so a
 * missing proxy is a drop right there (fail closed) instead of a rule that
 * silently does not match. Either way the stack has to deliver a packet for a
 * foreign address locally: MARK_MAGIC_TO_PROXY selects the agent's policy
 * route "local 0.0.0.0/0 dev lo" (ip rule fwmark 0x200/0xf00), as Cilium's.
 */
#define MARK_MAGIC_MASK		0x0F00
#define MARK_MAGIC_TO_PROXY	0x0200
/* Set by the proxy (SO_MARK) on its upstream connections; the upper 16 bits carry the client's identity. */
#define MARK_MAGIC_FROM_PROXY	0x0A00

/* Cilium's numbering (pkg/monitor/api/drop.go). */
#define DROP_PROXY_LOOKUP_FAILED	-178	/* Socket lookup failed: no proxy listening (fail closed) */
#define DROP_PROXY_ASSIGN_FAILED	-179	/* Socket assign failed */
#define DROP_PROXY_UNKNOWN_PROTO	-180	/* Proxy redirection not supported for protocol */

#ifndef BPF_TCP_LISTEN
#define BPF_TCP_LISTEN	10
#endif
#ifndef PACKET_HOST
#define PACKET_HOST	0
#endif

/* Written by the agent: the proxy's listener port while an L7 rule is in force, 0 otherwise. */
struct proxy_config {
	__u16	port;
	__u16	pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct proxy_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_proxy SEC(".maps");

static __always_inline __u16 proxy_enabled_port(void)
{
	__u32 zero = 0;
	const struct proxy_config *c = bpf_map_lookup_elem(&tendril_proxy, &zero);

	return c ? c->port : 0;
}

/* Whether the node proxy sent @skb (its upstream connection): its L7 rules already ran. */
static __always_inline bool from_proxy(const struct __sk_buff *skb)
{
	return (skb->mark & MARK_MAGIC_MASK) == MARK_MAGIC_FROM_PROXY;
}

/* The client identity the proxy's mark carries, else @dflt. */
static __always_inline __u32 proxy_source_identity(const struct __sk_buff *skb, __u32 dflt)
{
	return from_proxy(skb) && (skb->mark >> 16) ? skb->mark >> 16 : dflt;
}

/* Hand @skb to @sk and to the local stack (the mark selects the local route). */
static __always_inline int proxy_assign(struct __sk_buff *skb, struct bpf_sock *sk)
{
	long ret = bpf_sk_assign(skb, sk, 0);

	bpf_sk_release(sk);
	if (ret)
		return DROP_PROXY_ASSIGN_FAILED;
	skb->mark = MARK_MAGIC_TO_PROXY;
	/* Addressed to the router MAC (or, decapsulated, to the sender's idea of one): the stack must take it. */
	bpf_skb_change_type(skb, PACKET_HOST);
	return TC_ACT_OK;
}

/*
 * Steer @p, which an L7 entry allowed with @proxy_port, to the proxy (tc
 * ingress only): the socket that owns the flow already (the accepted
 * connection or its pending handshake), else the listener. Traces to-proxy
 * with the port. Returns TC_ACT_OK or a DROP_*: with no proxy the connection
 * fails, it never bypasses to the destination.
 */
static __always_inline int proxy_redirect4(struct __sk_buff *skb, struct trace_ctx *trace,
					   const struct ct_pkt *p, __u16 proxy_port, __u16 source,
					   __u32 src_label, __u32 dst_label)
{
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;
	int ret;

	if (p->tuple.nexthdr != IPPROTO_TCP)
		return DROP_PROXY_UNKNOWN_PROTO;
	tuple.ipv4.saddr = p->tuple.saddr;
	tuple.ipv4.daddr = p->tuple.daddr;
	tuple.ipv4.sport = p->tuple.sport;
	tuple.ipv4.dport = p->tuple.dport;
	sk = bpf_skc_lookup_tcp(skb, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (sk && sk->state == BPF_TCP_LISTEN) {
		/* Something of the node's own listening on the port is not the proxy. */
		bpf_sk_release(sk);
		sk = NULL;
	}
	if (!sk) {
		tuple.ipv4.dport = bpf_htons(proxy_port);
		sk = bpf_skc_lookup_tcp(skb, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
		if (!sk)
			return DROP_PROXY_LOOKUP_FAILED;
	}
	ret = proxy_assign(skb, sk);
	if (ret == TC_ACT_OK)
		trace_point(skb, trace, TRACE_TO_PROXY, source, src_label, dst_label, proxy_port);
	return ret;
}

/*
 * A reply to one of the proxy's upstream connections (they keep the client's
 * address, so the reply is addressed to a pod): hand it to that socket.
 * Returns TC_ACT_OK when it was one, or 0 with @skb untouched to go on
 * (tc ingress only; a lookup only while a proxy is configured).
 */
static __always_inline int proxy_reply4(struct __sk_buff *skb, struct trace_ctx *trace,
					const struct ct_pkt *p, __u16 source, __u32 src_label,
					__u32 dst_label, bool *taken)
{
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;
	__u16 port;
	int ret;

	*taken = false;
	if (p->tuple.nexthdr != IPPROTO_TCP)
		return 0;
	port = proxy_enabled_port();
	if (!port)
		return 0;
	tuple.ipv4.saddr = p->tuple.saddr;
	tuple.ipv4.daddr = p->tuple.daddr;
	tuple.ipv4.sport = p->tuple.sport;
	tuple.ipv4.dport = p->tuple.dport;
	sk = bpf_skc_lookup_tcp(skb, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	if (sk->state == BPF_TCP_LISTEN) {
		bpf_sk_release(sk);
		return 0;
	}
	*taken = true;
	ret = proxy_assign(skb, sk);
	if (ret == TC_ACT_OK)
		trace_point(skb, trace, TRACE_TO_PROXY, source, src_label, dst_label, port);
	return ret;
}

#endif /* __TENDRIL_PROXY_H_ */
