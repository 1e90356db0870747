/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Trace events at observation points, aggregated per connection so that watching costs little. */
#ifndef __TENDRIL_TRACE_H_
#define __TENDRIL_TRACE_H_

#include "common.h"
#include "config.h"
#include "events.h"

/* Cilium's CT_REPORT_INTERVAL: an established flow is reported again at most this often. */
#define TRACE_REPORT_INTERVAL_NS	(5ULL * 1000 * 1000 * 1000)
/* TCP flags whose first appearance in a flow is reported (FIN, SYN, RST, ACK). */
#define TRACE_TCP_FLAGS		0x17
#define TRACE_TCP_SYN		0x02
#define TRACE_TCP_ACK		0x10
#define TRACE_AGG_MAP_SIZE	65536

/*
 * The program a packet is traced in (trace_key.hook). A program traces up
 * to two observation points per packet (where it came from, where it goes)
 * and both follow one aggregation decision, so the hot path costs one
 * lookup per program rather than per point.
 */
#define TRACE_HOOK_FROM_CONTAINER	1
#define TRACE_HOOK_FROM_HOST		2
#define TRACE_HOOK_FROM_OVERLAY		3
#define TRACE_HOOK_FROM_NETDEV		4

/*
 * skb->mark of a pod's packet that from-container traced to-network itself
 * (native routing, bpf_fib_lookup() + redirect to the native device): the
 * native device's egress (cil_to_netdev) does not trace it again, and
 * clears the mark. Set only with masquerading on, where that program runs.
 * The 0x0F00 nibble is Cilium's MARK_MAGIC_* field (lib/proxy.h).
 */
#define MARK_MAGIC_TRACE_MASK		0x0F00
#define MARK_MAGIC_TRACED_NET		0x0700

/* Key of tendril_trace_agg: one flow (direction included) in one program. */
struct trace_key {
	__be32	saddr;
	__be32	daddr;
	__be16	sport;
	__be16	dport;
	__u8	proto;
	__u8	hook;		/* TRACE_HOOK_* */
	__u16	pad;
};

_Static_assert(sizeof(struct trace_key) == 16, "trace_key must be 16 bytes");

/* Value of tendril_trace_agg: what was last reported of the flow there. */
struct trace_state {
	__u64	last_report;	/* bpf_ktime_get_coarse_ns() of the last report */
	__u8	tcp_flags;	/* TRACE_TCP_FLAGS seen so far */
	__u8	reply;		/* the flow answers one seen before: reported as 'reply' */
	__u8	pad[6];
};

_Static_assert(sizeof(struct trace_state) == 16, "trace_state must be 16 bytes");

/* LRU: an evicted flow is merely reported once more as new. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct trace_key);
	__type(value, struct trace_state);
	__uint(max_entries, TRACE_AGG_MAP_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_trace_agg SEC(".maps");

/*
 * Whether the packet of flow @f in program @hook is worth reporting, and
 * with which reason. The common case (a known flow, nothing new) is one
 * lookup and a coarse clock read (5 s needs no better); the map is written
 * only when a report goes out. A flow not yet known here is 'reply' when its
 * reverse passed any of this node's programs (a reply leaves the pod the
 * request entered, or comes back through the tunnel it left by), else
 * 'new', and keeps that verdict for its later reports.
 */
static __always_inline bool trace_check(const struct flow4 *f, __u8 hook, __u8 *reason)
{
	struct trace_key key = {}, rkey = {};
	struct trace_state *st, fresh = {};
	__u64 now;
	__u8 flags;
	int h;

	if (!CONFIG_EVENTS || !f->valid)
		return false;
	key.saddr = f->saddr;
	key.daddr = f->daddr;
	key.sport = f->sport;
	key.dport = f->dport;
	key.proto = f->proto;
	key.hook = hook;
	flags = f->tcp_flags & TRACE_TCP_FLAGS;
	now = bpf_ktime_get_coarse_ns();

	st = bpf_map_lookup_elem(&tendril_trace_agg, &key);
	if (likely(st)) {
		if ((st->tcp_flags | flags) == st->tcp_flags &&
		    now - st->last_report < TRACE_REPORT_INTERVAL_NS)
			return false;
		/* Racing CPUs may both report once: harmless, and cheaper than a lock. */
		st->tcp_flags |= flags;
		st->last_report = now;
		*reason = st->reply ? TRACE_REASON_REPLY : TRACE_REASON_ESTABLISHED;
		return true;
	}

	/*
	 * A TCP flow's first packet here usually says itself what it is: a
	 * bare SYN opens a connection, a SYN-ACK answers one. Only a flow met
	 * mid-way (its entry evicted, the datapath reloaded), or one of another
	 * protocol, looks for its reverse: the four lookups, which all miss for
	 * a new connection, cost more than the rest of its first packet.
	 */
	if (f->proto == IPPROTO_TCP && (f->tcp_flags & TRACE_TCP_SYN)) {
		fresh.reply = (f->tcp_flags & TRACE_TCP_ACK) != 0;
		goto record;
	}

	/* New flows only: up to one lookup per program for the reverse tuple. */
	rkey.saddr = f->daddr;
	rkey.daddr = f->saddr;
	rkey.sport = f->dport;
	rkey.dport = f->sport;
	rkey.proto = f->proto;
#pragma unroll
	for (h = TRACE_HOOK_FROM_CONTAINER; h <= TRACE_HOOK_FROM_NETDEV; h++) {
		rkey.hook = h;
		if (bpf_map_lookup_elem(&tendril_trace_agg, &rkey)) {
			fresh.reply = 1;
			break;
		}
	}
record:
	fresh.tcp_flags = flags;
	fresh.last_report = now;
	bpf_map_update_elem(&tendril_trace_agg, &key, &fresh, BPF_ANY);
	*reason = fresh.reply ? TRACE_REASON_REPLY : TRACE_REASON_NEW;
	return true;
}

/* Write one trace event. */
static __always_inline void trace_emit(struct __sk_buff *skb, const struct flow4 *f, __u8 obs,
				       __u8 reason, __u16 source, __u32 src_label,
				       __u32 dst_label, __u16 dst_id)
{
	struct event_record *e = event_reserve(skb, EVENT_TYPE_TRACE, obs, f);

	if (!e)
		return;
	e->hdr.reason = reason;
	e->hdr.source = source;
	e->hdr.src_label = src_label;
	e->hdr.dst_label = dst_label;
	e->hdr.dst_id = dst_id;
	event_submit(skb, e);
}

/* A program's tracing of one packet: its tuple and the one aggregation decision. */
struct trace_ctx {
	struct flow4	flow;
	bool		report;
	__u8		reason;
};

/*
 * Decide whether this packet is reported in program @hook; @ip is its
 * checked IPv4 header. With CONFIG_EVENTS = 0 it compiles (verifies) away.
 */
static __always_inline void trace_start(struct __sk_buff *skb, const struct iphdr *ip, __u8 hook,
					struct trace_ctx *t)
{
	flow4_from_ip(skb, ip, &t->flow);
	t->report = trace_check(&t->flow, hook, &t->reason);
}

/*
 * The packet passes observation point @obs (TRACE_*): an event if the packet
 * is reported. @source is the endpoint the event belongs to (the sender at
 * from-endpoint, the receiver at to-endpoint), @dst_id the destination
 * endpoint when it is local.
 */
static __always_inline void trace_point(struct __sk_buff *skb, const struct trace_ctx *t, __u8 obs,
					__u16 source, __u32 src_label, __u32 dst_label,
					__u16 dst_id)
{
	if (t->report)
		trace_emit(skb, &t->flow, obs, t->reason, source, src_label, dst_label, dst_id);
}

#endif /* __TENDRIL_TRACE_H_ */
