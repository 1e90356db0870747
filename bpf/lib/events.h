/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Datapath events: the node's one ring buffer, the record layout (src/datapath/events.ts must match), policy verdicts. */
#ifndef __TENDRIL_EVENTS_H_
#define __TENDRIL_EVENTS_H_

#include <linux/ip.h>
#include <linux/in.h>

#include "common.h"
#include "config.h"

/* Message types, Cilium's numbering (pkg/monitor/api/types.go). */
#define EVENT_TYPE_DROP			1
#define EVENT_TYPE_TRACE		4
#define EVENT_TYPE_POLICY_VERDICT	5

/* Bumped whenever struct event_hdr changes; the reader skips versions it does not know. */
#define EVENT_VERSION		1

/* Packet bytes an event carries at most (Cilium's TRACE_PAYLOAD_LEN is 128 too). */
#define EVENT_CAP_MAX		128

/* Observation points: event_hdr.subtype of a trace, Cilium's TRACE_TO_LXC... numbering. */
#define TRACE_TO_ENDPOINT	0
#define TRACE_TO_PROXY		1
#define TRACE_TO_HOST		2
#define TRACE_TO_STACK		3
#define TRACE_TO_OVERLAY	4
#define TRACE_FROM_ENDPOINT	5
#define TRACE_FROM_PROXY	6
#define TRACE_FROM_HOST		7
#define TRACE_FROM_STACK	8
#define TRACE_FROM_OVERLAY	9
#define TRACE_FROM_NETWORK	10
#define TRACE_TO_NETWORK	11

/* event_hdr.reason of a trace (Cilium's TraceReason). */
#define TRACE_REASON_NEW		0
#define TRACE_REASON_ESTABLISHED	1
#define TRACE_REASON_REPLY		2
#define TRACE_REASON_RELATED		3
#define TRACE_REASON_UNKNOWN		5

/* event_hdr.file of a drop: which object dropped. Each object defines EVENT_FILE as one of these. */
#define EVENT_FILE_LXC		1
#define EVENT_FILE_HOST		2
#define EVENT_FILE_OVERLAY	3

/* Policy verdicts: event_hdr.reason (action), .dir and .match. */
#define VERDICT_ALLOW		1
#define VERDICT_DENY		2
#define VERDICT_AUDIT		3
#define VERDICT_DIR_INGRESS	1
#define VERDICT_DIR_EGRESS	2
/* Match types, Cilium's PolicyMatchType numbering. */
#define VERDICT_MATCH_NONE	0
#define VERDICT_MATCH_L3_ONLY	1
#define VERDICT_MATCH_L3_L4	2
#define VERDICT_MATCH_L4_ONLY	3
#define VERDICT_MATCH_ALL	4
#define VERDICT_MATCH_L3_PROTO	5
#define VERDICT_MATCH_PROTO_ONLY 6

/*
 * Header of every event, 48 bytes, host byte order unless noted. The first
 * 16 bytes are Cilium's common notify header; the rest carries the fields of
 * all three kinds at fixed places (a field a kind does not use is 0), so one
 * decoder reads them all.
 */
struct event_hdr {
	__u8	type;		/* EVENT_TYPE_* */
	__u8	subtype;	/* trace: TRACE_* point; drop: reason (positive DROP_* code); verdict: 0 */
	__u16	source;		/* endpoint ID the event belongs to, 0 if none */
	__u32	hash;		/* flow hash: same for a 5-tuple at every point, differs per direction */
	__u32	len_orig;	/* skb->len */
	__u16	len_cap;	/* packet bytes in the record after this header */
	__u8	version;	/* EVENT_VERSION */
	__u8	reason;		/* trace: TRACE_REASON_*; verdict: VERDICT_ALLOW/DENY/AUDIT */
	__u32	src_label;	/* source security identity */
	__u32	dst_label;	/* destination security identity */
	__u16	dst_id;		/* destination endpoint ID when local, else 0 */
	__u16	cpu;		/* CPU that wrote the event */
	__u32	ifindex;	/* interface the program ran on */
	__u64	ktime;		/* bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u16	line;		/* drop: source line */
	__u8	file;		/* drop: EVENT_FILE_* */
	__u8	dir;		/* verdict: VERDICT_DIR_* */
	__u16	dport;		/* verdict: destination port */
	__u8	proto;		/* verdict: IP protocol */
	__u8	match;		/* verdict: VERDICT_MATCH_* */
};

_Static_assert(sizeof(struct event_hdr) == 48, "event_hdr must be 48 bytes");

/* One ring buffer record: fixed size, so reserving never depends on the packet. */
struct event_record {
	struct event_hdr	hdr;
	__u8			data[EVENT_CAP_MAX];	/* first len_cap bytes of the packet, from the Ethernet header */
};

/*
 * Nothing refers to the record types outside inlined code, so clang would
 * leave them out of the object's BTF, where the agent's layout test reads
 * them. This unused variable keeps them there; libbpf skips its section.
 */
const struct event_record __tendril_event_layout __attribute__((section(".tendril.layout"), used));

#ifndef EVENTS_RING_SIZE
/* 1 MiB: about 5900 records, i.e. 20 ms of polling covers ~290k events/s. */
#define EVENTS_RING_SIZE	(1 << 20)
#endif

/* One ring for the whole node: every object pins the same map by name. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EVENTS_RING_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_events SEC(".maps");

/* Indexes of tendril_events_lost. */
#define EVENTS_LOST_RING_FULL	0	/* no room in the ring: the reader is behind */
#define EVENTS_LOST_DROP_RATE	1	/* drop events over the per-CPU rate limit */

/* Events that were not written, per CPU: the reader reports them as lost. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_events_lost SEC(".maps");

static __always_inline void events_count_lost(__u32 why)
{
	__u64 *n = bpf_map_lookup_elem(&tendril_events_lost, &why);

	/* Per-CPU slot: no other writer, no atomic needed. */
	if (n)
		*n += 1;
}

/*
 * The 5-tuple of an IPv4 packet as events see it. ICMP echo carries its
 * identifier as a port so that a ping is a flow of its own and its reply the
 * reverse of it (request: sport = id, reply: dport = id, as Cilium's CT).
 */
struct flow4 {
	__be32	saddr;
	__be32	daddr;
	__be16	sport;
	__be16	dport;
	__u8	proto;
	__u8	tcp_flags;	/* flags byte of a TCP header, 0 otherwise */
	__u8	valid;		/* the packet was IPv4 and the tuple is filled */
	__u8	pad;
};

#ifndef ICMP_ECHOREPLY
#define ICMP_ECHOREPLY	0
#define ICMP_ECHO	8
#endif

/* Ports (or ICMP echo identifier) from the first 8 bytes of the L4 header. */
static __always_inline void flow4_ports(struct flow4 *f, const __u8 *l4)
{
	switch (f->proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		f->sport = *(__be16 *)&l4[0];
		f->dport = *(__be16 *)&l4[2];
		break;
	case IPPROTO_ICMP:
		/* l4[0] type; l4[4..5] echo identifier. */
		if (l4[0] == ICMP_ECHO)
			f->sport = *(__be16 *)&l4[4];
		else if (l4[0] == ICMP_ECHOREPLY)
			f->dport = *(__be16 *)&l4[4];
		break;
	}
}

/* L4 bytes a tuple needs: 8 (ports, ICMP echo id), 14 for TCP (up to its flags). */
#define FLOW4_L4_LEN		8
#define FLOW4_TCP_LEN		14

/*
 * The tuple of the IPv4 packet whose (checked) header is @ip, read in place:
 * this runs for every packet while events are on. The L4 bytes are usually
 * in the linear part too; when not, they are copied out. With CONFIG_EVENTS
 * = 0 the verifier drops all of it.
 */
static __always_inline void flow4_from_ip(struct __sk_buff *skb, const struct iphdr *ip,
					  struct flow4 *f)
{
	void *data_end = (void *)(long)skb->data_end;
	__u32 off = ETH_HLEN + ip->ihl * 4;
	const __u8 *l4;
	__u8 buf[FLOW4_TCP_LEN];

	__builtin_memset(f, 0, sizeof(*f));
	if (!CONFIG_EVENTS)
		return;
	f->saddr = ip->saddr;
	f->daddr = ip->daddr;
	f->proto = ip->protocol;
	f->valid = 1;
	/* Later fragments have no L4 header. */
	if (ip->frag_off & bpf_htons(0x1fff))
		return;
	l4 = (const __u8 *)ip + ip->ihl * 4;
	if (f->proto == IPPROTO_TCP) {
		if ((void *)l4 + FLOW4_TCP_LEN > data_end) {
			if (bpf_skb_load_bytes(skb, off, buf, FLOW4_TCP_LEN) < 0)
				return;
			l4 = buf;
		}
		f->tcp_flags = l4[13];
	} else if ((void *)l4 + FLOW4_L4_LEN > data_end) {
		if (bpf_skb_load_bytes(skb, off, buf, FLOW4_L4_LEN) < 0)
			return;
		l4 = buf;
	}
	flow4_ports(f, l4);
}

/*
 * The tuple of whatever @skb holds, copied out with bpf_skb_load_bytes: for
 * exits (drops, verdicts) that have no checked header pointer at hand.
 */
static __always_inline void flow4_load(struct __sk_buff *skb, struct flow4 *f)
{
	struct iphdr ip;
	__u8 l4[FLOW4_TCP_LEN];
	__u32 off;

	__builtin_memset(f, 0, sizeof(*f));
	if (!CONFIG_EVENTS || skb->protocol != bpf_htons(ETH_P_IP))
		return;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0 || ip.version != 4)
		return;
	f->saddr = ip.saddr;
	f->daddr = ip.daddr;
	f->proto = ip.protocol;
	f->valid = 1;
	if (ip.frag_off & bpf_htons(0x1fff))
		return;
	off = ETH_HLEN + ip.ihl * 4;
	if (ip.protocol == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, off, l4, FLOW4_TCP_LEN) < 0)
			return;
		f->tcp_flags = l4[13];
	} else if (bpf_skb_load_bytes(skb, off, l4, FLOW4_L4_LEN) < 0) {
		return;
	}
	flow4_ports(f, l4);
}

/* Cheap mix of the tuple (murmur3 finaliser steps); direction-dependent on purpose. */
static __always_inline __u32 flow4_hash(const struct flow4 *f)
{
	__u32 h;

	if (!f->valid)
		return 0;
	h = f->saddr * 0x9e3779b1;
	h ^= f->daddr;
	h = (h ^ (h >> 16)) * 0x85ebca6b;
	h ^= ((__u32)f->sport << 16) | f->dport;
	h = (h ^ (h >> 13)) * 0xc2b2ae35;
	h ^= f->proto;
	return h ^ (h >> 16);
}

/*
 * Reserve a record and fill the common fields; the caller sets the fields of
 * its kind and hands the record to event_submit(). A full ring is counted,
 * never waited for: the datapath does not slow down for a slow reader.
 */
static __always_inline struct event_record *event_reserve(struct __sk_buff *skb, __u8 type,
							  __u8 subtype, const struct flow4 *f)
{
	struct event_record *e;

	e = bpf_ringbuf_reserve(&tendril_events, sizeof(*e), 0);
	if (!e) {
		events_count_lost(EVENTS_LOST_RING_FULL);
		return NULL;
	}
	__builtin_memset(&e->hdr, 0, sizeof(e->hdr));
	e->hdr.type = type;
	e->hdr.subtype = subtype;
	e->hdr.version = EVENT_VERSION;
	e->hdr.hash = flow4_hash(f);
	e->hdr.len_orig = skb->len;
	e->hdr.ifindex = skb->ifindex;
	e->hdr.cpu = bpf_get_smp_processor_id();
	e->hdr.ktime = bpf_ktime_get_ns();
	return e;
}

/*
 * Copy the first bytes of the packet and publish. No wakeup: the agent polls
 * on a timer, and skipping the wakeup keeps the cost per event the same
 * whether anyone listens or not.
 */
static __always_inline void event_submit(struct __sk_buff *skb, struct event_record *e)
{
	__u32 cap = skb->len;

	if (cap > EVENT_CAP_MAX)
		cap = EVENT_CAP_MAX;
	if (cap == 0 || bpf_skb_load_bytes(skb, 0, e->data, cap) < 0)
		cap = 0;
	e->hdr.len_cap = cap;
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

/*
 * A policy decision for the packet in @skb: @action VERDICT_*, @dir
 * VERDICT_DIR_*, @match VERDICT_MATCH_*, the L4 protocol and destination
 * port (host order) the rule matched on. Denials are always reported; the
 * policy code decides which allows are worth an event.
 */
static __always_inline void send_policy_verdict_notify(struct __sk_buff *skb, __u16 source,
						       __u32 src_label, __u32 dst_label,
						       __u8 dir, __u8 proto, __u16 dport,
						       __u8 action, __u8 match)
{
	struct event_record *e;
	struct flow4 f;

	if (!CONFIG_EVENTS)
		return;
	flow4_load(skb, &f);
	e = event_reserve(skb, EVENT_TYPE_POLICY_VERDICT, 0, &f);
	if (!e)
		return;
	e->hdr.source = source;
	e->hdr.src_label = src_label;
	e->hdr.dst_label = dst_label;
	e->hdr.reason = action;
	e->hdr.dir = dir;
	e->hdr.proto = proto;
	e->hdr.dport = dport;
	e->hdr.match = match;
	event_submit(skb, e);
}

#endif /* __TENDRIL_EVENTS_H_ */
