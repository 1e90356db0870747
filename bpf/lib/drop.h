/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Drop reasons (negative codes, Cilium numbering) and the drop exit path, which writes rate-limited drop events. */
#ifndef __TENDRIL_DROP_H_
#define __TENDRIL_DROP_H_

#include "common.h"
#include "config.h"
#include "events.h"
#include "identity.h"

/*
 * Numbering and meaning follow Cilium (pkg/monitor/api/drop.go) so tools that
 * know Cilium's reasons read ours unchanged. Keep in sync with DROP_REASONS in
 * src/datapath/maps.ts.
 */
#define DROP_INVALID_SIP	-132	/* Invalid source ip */
#define DROP_POLICY		-133	/* Policy denied */
#define DROP_INVALID		-134	/* Invalid packet */
#define DROP_UNKNOWN_L3		-139	/* Unsupported L3 protocol */
#define DROP_WRITE_ERROR	-141	/* Error writing to packet */
#define DROP_UNKNOWN_L4		-142	/* Unknown L4 protocol */
#define DROP_NO_TUNNEL_KEY	-147	/* Error retrieving tunnel key */
#define DROP_UNKNOWN_TARGET	-150	/* Unknown L3 target address */
#define DROP_CSUM_L3		-153	/* Error while correcting L3 checksum */
#define DROP_UNSUPPORTED_L2	-166	/* Unsupported L2 protocol */
#define DROP_INVALID_IDENTITY	-171	/* Invalid identity */
#define DROP_TTL_EXCEEDED	-196	/* TTL exceeded */
#define DROP_EP_NOT_READY	-203	/* Endpoint policy program not available */

#define IS_ERR(x)	(unlikely((int)(x) < 0))

/* Drop events per second and CPU, and the burst allowed after a quiet time. */
#define DROP_NOTIFY_RATE	1000
#define DROP_NOTIFY_BURST	1000
#define NSEC_PER_SEC		(1000ULL * 1000 * 1000)

/* Token bucket of drop events, one per CPU (no locking). */
struct drop_bucket {
	__u64	last;		/* ktime up to which tokens were added */
	__u64	tokens;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct drop_bucket);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_drop_rate SEC(".maps");

/*
 * Drops are always reported, but a flood of them (a pod spraying spoofed
 * packets) must not flood the ring and hide everything else: past the rate,
 * drop events are counted instead of written.
 */
static __always_inline bool drop_notify_allowed(void)
{
	const __u64 step = NSEC_PER_SEC / DROP_NOTIFY_RATE;
	struct drop_bucket *b;
	__u32 zero = 0;
	__u64 now, add;

	b = bpf_map_lookup_elem(&tendril_drop_rate, &zero);
	if (!b)
		return false;
	now = bpf_ktime_get_ns();
	add = (now - b->last) / step;
	if (add) {
		b->tokens += add;
		if (b->tokens >= DROP_NOTIFY_BURST) {
			b->tokens = DROP_NOTIFY_BURST;
			b->last = now;
		} else {
			/* Keep the remainder, so that a steady rate is not rounded down. */
			b->last += add * step;
		}
	}
	if (!b->tokens) {
		events_count_lost(EVENTS_LOST_DROP_RATE);
		return false;
	}
	b->tokens--;
	return true;
}

/*
 * Every drop leaves through here: it writes the drop event (reason as the
 * positive code, where: @file and @line) and returns TC_ACT_SHOT. The source
 * identity is what the program learnt so far (skb->cb, 0 if nothing yet).
 * Use the send_drop_notify*() macros, which fill in the object and line.
 */
static __always_inline int __send_drop_notify(struct __sk_buff *skb, int reason, __u16 source,
					      __u8 file, __u16 line)
{
	struct event_record *e;
	struct flow4 f;

	if (!CONFIG_EVENTS || !drop_notify_allowed())
		return TC_ACT_SHOT;
	flow4_load(skb, &f);
	e = event_reserve(skb, EVENT_TYPE_DROP, (__u8)-reason, &f);
	if (!e)
		return TC_ACT_SHOT;
	e->hdr.source = source;
	e->hdr.src_label = skb->cb[CB_SRC_IDENTITY];
	e->hdr.file = file;
	e->hdr.line = line;
	event_submit(skb, e);
	return TC_ACT_SHOT;
}

#ifndef EVENT_FILE
#error "define EVENT_FILE (EVENT_FILE_LXC, _HOST, _OVERLAY) before including drop.h"
#endif

/* Drop with @reason (a DROP_* code), no endpoint known. */
#define send_drop_notify(skb, reason) \
	__send_drop_notify(skb, reason, 0, EVENT_FILE, __LINE__)
/* Drop of a packet that belongs to endpoint @ep (its ID). */
#define send_drop_notify_ep(skb, reason, ep) \
	__send_drop_notify(skb, reason, ep, EVENT_FILE, __LINE__)

#endif /* __TENDRIL_DROP_H_ */
