/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection tracking: one node-wide table per kind (TCP, other), keyed by 5-tuple and direction at the policy point. */
#ifndef __TENDRIL_CONNTRACK_H_
#define __TENDRIL_CONNTRACK_H_

#include <linux/ip.h>
#include <linux/in.h>

#include "common.h"
#include "config.h"
#include "drop.h"

/*
 * Sizes kept modest: the lab runs several nodes on one machine, and both maps
 * are preallocated LRU hashes (48 bytes of key + value each, plus overhead).
 */
#define CT_MAP_SIZE_TCP		131072
#define CT_MAP_SIZE_ANY		65536

/* ct_tuple4.dir: where the packet is seen. */
#define CT_EGRESS		0	/* the packet left an endpoint */
#define CT_INGRESS		1	/* the packet enters an endpoint */

/* Result of a lookup; same numbering as TRACE_REASON_*. */
#define CT_NEW			0
#define CT_ESTABLISHED		1
#define CT_REPLY		2
#define CT_RELATED		3

/* ct_entry.flags */
#define CT_F_RX_CLOSING		1	/* FIN (or RST) seen in the reply direction */
#define CT_F_TX_CLOSING		2	/* FIN (or RST) seen in the entry's direction */
#define CT_F_SEEN_NON_SYN	4	/* a TCP packet without SYN was seen: the handshake is done */

#define TCP_F_FIN		0x01
#define TCP_F_SYN		0x02
#define TCP_F_RST		0x04

#ifndef ICMP_ECHOREPLY
#define ICMP_ECHOREPLY		0
#define ICMP_ECHO		8
#endif
#define ICMP_DEST_UNREACH	3
#define ICMP_TIME_EXCEEDED	11
#define ICMP_PARAMETERPROB	12

/*
 * Key of tendril_ct4 and tendril_ct_any4: the packet's tuple as seen where
 * it is tracked, and the direction. A same-node packet pod -> pod makes two
 * entries, an egress one for the sender and an ingress one for the receiver.
 * ICMP echo: the identifier is the source port of a request and the
 * destination port of a reply, so a reply is the reverse of its request.
 */
struct ct_tuple4 {
	__be32	saddr;
	__be32	daddr;
	__be16	sport;
	__be16	dport;
	__u8	nexthdr;
	__u8	dir;		/* CT_EGRESS / CT_INGRESS */
	__u16	pad;
};

_Static_assert(sizeof(struct ct_tuple4) == 16, "ct_tuple4 must be 16 bytes");

/* Value: counters of both directions, expiry and TCP state. */
struct ct_entry {
	__u64	packets;	/* both directions, atomic adds */
	__u64	bytes;
	__u32	lifetime;	/* CLOCK_MONOTONIC seconds after which the entry is expired */
	__u32	src_sec_id;	/* source identity of the packet that created the entry */
	__u16	flags;		/* CT_F_* */
	__u8	tx_flags_seen;	/* TCP flags seen in the entry's direction */
	__u8	rx_flags_seen;	/* TCP flags seen in the reply direction */
	__u32	created;	/* CLOCK_MONOTONIC seconds */
};

_Static_assert(sizeof(struct ct_entry) == 32, "ct_entry must be 32 bytes");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_tuple4);
	__type(value, struct ct_entry);
	__uint(max_entries, CT_MAP_SIZE_TCP);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_ct4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_tuple4);
	__type(value, struct ct_entry);
	__uint(max_entries, CT_MAP_SIZE_ANY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_ct_any4 SEC(".maps");

/*
 * IP fragments: only the first one carries the L4 header. Its ports are kept
 * per datagram (Cilium's cilium_ipv4_frag_datagrams) so that the later
 * fragments are tracked and policed as the flow they belong to, and a large
 * UDP reply is not dropped at a pod whose ingress is enforced.
 */
#define FRAG_MAP_SIZE		8192
#define IP_MF			0x2000
#define IP_OFFSET		0x1fff

struct frag_key {
	__be32	saddr;
	__be32	daddr;
	__be16	id;
	__u8	proto;
	__u8	pad;
};

struct frag_ports {
	__be16	sport;
	__be16	dport;
	__be16	policy_dport;
	__u16	pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_key);
	__type(value, struct frag_ports);
	__uint(max_entries, FRAG_MAP_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_frag4 SEC(".maps");

/* A packet as conntrack and policy see it; parsed once per program. */
struct ct_pkt {
	struct ct_tuple4	tuple;		/* forward tuple; dir set per lookup */
	struct ct_tuple4	inner;		/* ICMP error: the tuple of the packet it reports */
	__be16			policy_dport;	/* L4 destination port; ICMP: type and code bytes */
	__u8			tcp_flags;
	__u8			icmp_error;	/* an ICMP error with a parsed inner tuple */
	__u8			no_ports;	/* a later IP fragment: no L4 header, nothing to track */
	__u8			status;		/* CT_* of the last lookup (CT_NEW before any) */
	__u16			proxy_port;	/* set by ct_policy4: the L7 proxy to steer to, 0 = none */
	__u32			len;
};

/* Ports (or ICMP echo identifier) of an L4 header's first 8 bytes, for protocol @proto. */
static __always_inline void ct_ports(struct ct_tuple4 *t, const __u8 *l4)
{
	switch (t->nexthdr) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:	/* ports first, as TCP and UDP */
		t->sport = *(__be16 *)&l4[0];
		t->dport = *(__be16 *)&l4[2];
		break;
	case IPPROTO_ICMP:
		if (l4[0] == ICMP_ECHO)
			t->sport = *(__be16 *)&l4[4];
		else if (l4[0] == ICMP_ECHOREPLY)
			t->dport = *(__be16 *)&l4[4];
		break;
	}
}

static __always_inline bool icmp_is_error(__u8 type)
{
	return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED || type == ICMP_PARAMETERPROB;
}

/* L4 bytes read: TCP up to its flags byte, 8 for everything else. */
#define CT_L4_LEN		8
#define CT_TCP_LEN		14

/*
 * Fill @p from the IPv4 packet whose checked header is @ip. The L4 header is
 * read in place when linear (the common case), copied out otherwise; neither
 * invalidates the caller's packet pointers. Returns 0 or
 * DROP_CT_INVALID_HDR for a first fragment too short for its L4 header.
 */
static __always_inline int ct_extract4(struct __sk_buff *skb, const struct iphdr *ip, struct ct_pkt *p)
{
	void *data_end = (void *)(long)skb->data_end;
	__u32 off = ETH_HLEN + ip->ihl * 4;
	__u8 buf[CT_TCP_LEN];
	const __u8 *l4;

	__builtin_memset(p, 0, sizeof(*p));
	p->tuple.saddr = ip->saddr;
	p->tuple.daddr = ip->daddr;
	p->tuple.nexthdr = ip->protocol;
	p->len = skb->len;
	/* A later fragment: the ports its first fragment recorded, else none (policy sees port 0). */
	if (unlikely(ip->frag_off & bpf_htons(IP_OFFSET))) {
		struct frag_key fk = { .saddr = ip->saddr, .daddr = ip->daddr, .id = ip->id, .proto = ip->protocol };
		struct frag_ports *fp = bpf_map_lookup_elem(&tendril_frag4, &fk);

		if (!fp) {
			p->no_ports = 1;
			return 0;
		}
		p->tuple.sport = fp->sport;
		p->tuple.dport = fp->dport;
		p->policy_dport = fp->policy_dport;
		return 0;
	}
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP && ip->protocol != IPPROTO_SCTP &&
	    ip->protocol != IPPROTO_ICMP)
		return 0;
	l4 = (const __u8 *)ip + ip->ihl * 4;
	/* One constant bound for every protocol keeps the verifier's range simple. */
	if ((void *)l4 + CT_TCP_LEN > data_end) {
		if (ip->protocol == IPPROTO_TCP) {
			if (bpf_skb_load_bytes(skb, off, buf, CT_TCP_LEN) < 0)
				return DROP_CT_INVALID_HDR;
		} else if (bpf_skb_load_bytes(skb, off, buf, CT_L4_LEN) < 0) {
			return DROP_CT_INVALID_HDR;
		}
		l4 = buf;
	}
	ct_ports(&p->tuple, l4);
	switch (ip->protocol) {
	case IPPROTO_TCP:
		p->tcp_flags = l4[13];
		p->policy_dport = p->tuple.dport;
		break;
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		p->policy_dport = p->tuple.dport;
		break;
	case IPPROTO_ICMP:
		/* Type and code as on the wire: policy matches a type by an 8-bit port prefix. */
		p->policy_dport = *(__be16 *)&l4[0];
		if (icmp_is_error(l4[0])) {
			struct iphdr inner;
			__u8 il4[CT_L4_LEN];

			/* The reported packet: its IPv4 header and first 8 L4 bytes. */
			if (bpf_skb_load_bytes(skb, off + 8, &inner, sizeof(inner)) < 0 || inner.ihl < 5)
				return 0;
			if (bpf_skb_load_bytes(skb, off + 8 + inner.ihl * 4, il4, sizeof(il4)) < 0)
				return 0;
			p->inner.saddr = inner.saddr;
			p->inner.daddr = inner.daddr;
			p->inner.nexthdr = inner.protocol;
			ct_ports(&p->inner, il4);
			p->icmp_error = 1;
		}
		break;
	}
	/* The first fragment of a datagram: keep its ports for the rest. */
	if (unlikely(ip->frag_off & bpf_htons(IP_MF)) && !p->icmp_error) {
		struct frag_key fk = { .saddr = ip->saddr, .daddr = ip->daddr, .id = ip->id, .proto = ip->protocol };
		struct frag_ports fp = { .sport = p->tuple.sport, .dport = p->tuple.dport, .policy_dport = p->policy_dport };

		bpf_map_update_elem(&tendril_frag4, &fk, &fp, BPF_ANY);
	}
	return 0;
}

/*
 * Seconds of CLOCK_MONOTONIC, the clock the agent reads with
 * process.hrtime(). The coarse variant is that clock as of the last tick
 * (at most a few ms behind), which is plenty for lifetimes in seconds and
 * costs a fraction of bpf_ktime_get_ns() under a hypervisor's clock source.
 */
static __always_inline __u32 ct_now(void)
{
	return bpf_ktime_get_coarse_ns() / NSEC_PER_SEC;
}

/* Timeout of an entry in state @flags (CT_F_*) of protocol @proto. */
static __always_inline __u32 ct_timeout(__u8 proto, __u16 flags)
{
	if (proto != IPPROTO_TCP)
		return CONFIG_CT_TIMEOUT_ANY;
	if ((flags & (CT_F_RX_CLOSING | CT_F_TX_CLOSING)) == (CT_F_RX_CLOSING | CT_F_TX_CLOSING))
		return CONFIG_CT_TIMEOUT_TCP_FIN;
	if (flags & CT_F_SEEN_NON_SYN)
		return CONFIG_CT_TIMEOUT_TCP;
	return CONFIG_CT_TIMEOUT_TCP_SYN;
}

/*
 * A packet matched entry @e (@reply: in the reverse direction). Counters
 * always; state and lifetime only when they change, which for an
 * established flow is once a second: the entry's cache line is written by
 * the atomic adds anyway, but the rest stays read-mostly.
 */
static __always_inline void ct_touch(struct ct_entry *e, const struct ct_pkt *p, bool reply, __u32 now)
{
	__u16 flags = e->flags, nflags = flags;
	__u8 f = p->tcp_flags;
	__u32 lifetime;

	__sync_fetch_and_add(&e->packets, 1);
	__sync_fetch_and_add(&e->bytes, p->len);
	if (p->tuple.nexthdr == IPPROTO_TCP) {
		if (reply) {
			if ((e->rx_flags_seen | f) != e->rx_flags_seen)
				e->rx_flags_seen |= f;
		} else if ((e->tx_flags_seen | f) != e->tx_flags_seen) {
			e->tx_flags_seen |= f;
		}
		if (f & TCP_F_RST)
			nflags |= CT_F_RX_CLOSING | CT_F_TX_CLOSING;
		else if (f & TCP_F_FIN)
			nflags |= reply ? CT_F_RX_CLOSING : CT_F_TX_CLOSING;
		else if ((f & TCP_F_SYN) && !reply && (flags & (CT_F_RX_CLOSING | CT_F_TX_CLOSING)))
			/*
			 * A new connection on the tuple of a closing one, opened the
			 * way the entry was: start over. A SYN the other way is not a
			 * reply and does not revive the entry.
			 */
			nflags &= ~(CT_F_RX_CLOSING | CT_F_TX_CLOSING | CT_F_SEEN_NON_SYN);
		if (!(f & TCP_F_SYN))
			nflags |= CT_F_SEEN_NON_SYN;
		if (nflags != flags)
			e->flags = nflags;
	}
	lifetime = now + ct_timeout(p->tuple.nexthdr, nflags);
	if (e->lifetime != lifetime)
		e->lifetime = lifetime;
}

/*
 * An entry past its lifetime is gone, whether or not the agent's GC has
 * removed it yet: its flow is new again (policy decides, the entry is
 * created anew), and its replies no longer pass on its account.
 */
static __always_inline bool ct_alive(const struct ct_entry *e, __u32 now)
{
	return e->lifetime >= now;
}

static __always_inline void ct_reverse(struct ct_tuple4 *r, const struct ct_tuple4 *t, __u8 dir)
{
	r->saddr = t->daddr;
	r->daddr = t->saddr;
	r->sport = t->dport;
	r->dport = t->sport;
	r->nexthdr = t->nexthdr;
	r->dir = dir;
	r->pad = 0;
}

static __always_inline void *ct_map(__u8 proto)
{
	if (proto == IPPROTO_TCP)
		return &tendril_ct4;
	return &tendril_ct_any4;
}

/*
 * Is the ICMP error in @p about a tracked flow? The reported packet went the
 * other way, so its tuple is looked up with the opposite direction; it may
 * also be a reply of that flow, then its reverse is the entry.
 */
static __always_inline bool ct_related4(const struct ct_pkt *p, __u8 dir)
{
	struct ct_tuple4 t = p->inner, r;
	void *map = ct_map(t.nexthdr);

	/*
	 * The error must be about a packet of the flow between the error's own
	 * ends: it goes back to the sender of the reported packet, and at a
	 * pod's egress the pod is the one the reported packet was sent to.
	 * Otherwise anyone with any tracked flow on this node could wrap any
	 * payload in an ICMP error and pass as related.
	 */
	if (p->inner.saddr != p->tuple.daddr)
		return false;
	if (dir == CT_EGRESS && p->inner.daddr != p->tuple.saddr)
		return false;

	t.dir = !dir;
	if (bpf_map_lookup_elem(map, &t))
		return true;
	ct_reverse(&r, &p->inner, dir);
	return bpf_map_lookup_elem(map, &r) != NULL;
}

/*
 * Track the packet @p at a point in direction @dir (CT_EGRESS, CT_INGRESS):
 * first as the reply of an entry (reverse tuple, opposite direction), then
 * as a known flow (its own tuple). Returns CT_REPLY, CT_ESTABLISHED,
 * CT_RELATED (an ICMP error about a tracked flow) or CT_NEW, also kept in
 * p->status. Nothing is created here: see ct_create4(), called once policy
 * allowed.
 *
 * The second point of a same-node packet (the receiver's ingress after the
 * sender's egress) tries its own tuple first when the first point found the
 * flow established: both entries were made by the same first packet, so
 * that saves the reverse lookup that would miss, on the direction carrying
 * the data of most flows. Only a flow whose reverse is tracked as well (a
 * simultaneous open on the same ports) could tell the difference, and then
 * policy is checked rather than skipped.
 */
static __always_inline int __ct_lookup4(struct ct_pkt *p, __u8 dir, __u32 now)
{
	struct ct_tuple4 rev;
	struct ct_entry *e;
	void *map;

	p->tuple.dir = dir;
	if (p->icmp_error)
		return ct_related4(p, dir) ? CT_RELATED : CT_NEW;
	if (p->no_ports)
		return CT_NEW;
	map = ct_map(p->tuple.nexthdr);
	if (p->status == CT_ESTABLISHED) {
		e = bpf_map_lookup_elem(map, &p->tuple);
		if (likely(e && ct_alive(e, now))) {
			ct_touch(e, p, false, now);
			return CT_ESTABLISHED;
		}
	}
	ct_reverse(&rev, &p->tuple, !dir);
	e = bpf_map_lookup_elem(map, &rev);
	if (e && ct_alive(e, now)) {
		ct_touch(e, p, true, now);
		return CT_REPLY;
	}
	if (p->status == CT_ESTABLISHED)
		return CT_NEW;
	e = bpf_map_lookup_elem(map, &p->tuple);
	if (e && ct_alive(e, now)) {
		ct_touch(e, p, false, now);
		return CT_ESTABLISHED;
	}
	return CT_NEW;
}

static __always_inline int ct_lookup4(struct ct_pkt *p, __u8 dir, __u32 now)
{
	p->status = __ct_lookup4(p, dir, now);
	return p->status;
}

/*
 * Create the entry of a new flow whose first packet policy allowed, in the
 * direction of the last ct_lookup4(). ICMP errors and later fragments make
 * no entry. A failed insert is not fatal: the flow passes as new again.
 */
static __always_inline void ct_create4(const struct ct_pkt *p, __u32 src_sec_id, __u32 now)
{
	struct ct_entry e = {};

	if (p->icmp_error || p->no_ports)
		return;
	e.packets = 1;
	e.bytes = p->len;
	e.src_sec_id = src_sec_id;
	e.created = now;
	if (p->tuple.nexthdr == IPPROTO_TCP) {
		e.tx_flags_seen = p->tcp_flags;
		if (p->tcp_flags & TCP_F_RST)
			e.flags |= CT_F_RX_CLOSING | CT_F_TX_CLOSING;
		if (!(p->tcp_flags & TCP_F_SYN))
			e.flags |= CT_F_SEEN_NON_SYN;
	}
	e.lifetime = now + ct_timeout(p->tuple.nexthdr, e.flags);
	bpf_map_update_elem(ct_map(p->tuple.nexthdr), &p->tuple, &e, BPF_ANY);
}

#endif /* __TENDRIL_CONNTRACK_H_ */
