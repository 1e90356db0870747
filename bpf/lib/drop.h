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
#define DROP_CT_INVALID_HDR	-135	/* CT: Truncated or invalid header */
#define DROP_UNKNOWN_L3		-139	/* Unsupported L3 protocol */
#define DROP_WRITE_ERROR	-141	/* Error writing to packet */
#define DROP_UNKNOWN_L4		-142	/* Unknown L4 protocol */
#define DROP_NO_TUNNEL_KEY	-147	/* Error retrieving tunnel key */
#define DROP_UNKNOWN_TARGET	-150	/* Unknown L3 target address */
#define DROP_CSUM_L3		-153	/* Error while correcting L3 checksum */
#define DROP_CSUM_L4		-154	/* Error while correcting L4 checksum */
#define DROP_UNSUPPORTED_L2	-166	/* Unsupported L2 protocol */
#define DROP_NAT_NO_MAPPING	-167	/* No mapping for NAT masquerade */
#define DROP_NAT_UNSUPP_PROTO	-168	/* Unsupported protocol for NAT masquerade */
#define DROP_INVALID_IDENTITY	-171	/* Invalid identity */
#define DROP_POLICY_DENY	-181	/* Policy denied by denylist */
#define DROP_TTL_EXCEEDED	-196	/* TTL exceeded */
#define DROP_EP_NOT_READY	-203	/* Endpoint policy program not available */
#define DROP_NO_EGRESS_IP	-204	/* No Egress IP configured */

#define IS_ERR(x)	(unlikely((int)(x) < 0))

/* metrics_key.dir, Cilium's METRIC_INGRESS / METRIC_EGRESS. */
#define METRIC_DIR_UNKNOWN	0
#define METRIC_DIR_INGRESS	1
#define METRIC_DIR_EGRESS	2

#define METRICS_MAP_SIZE	1024

/* Key of tendril_metrics: one drop reason in one direction (Cilium's cilium_metrics without file/line). */
struct metrics_key {
	__u8	reason;		/* positive DROP_* code */
	__u8	dir;		/* METRIC_DIR_* */
	__u16	pad;
};

struct metrics_value {
	__u64	packets;
	__u64	bytes;
};

/* Drops by reason and direction, per CPU (no atomics); the agent sums the CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct metrics_key);
	__type(value, struct metrics_value);
	__uint(max_entries, METRICS_MAP_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_metrics SEC(".maps");

static __always_inline void metrics_count_drop(__u8 reason, __u8 dir, __u32 bytes)
{
	struct metrics_key key = { .reason = reason, .dir = dir };
	struct metrics_value *v, fresh = { .packets = 1, .bytes = bytes };

	v = bpf_map_lookup_elem(&tendril_metrics, &key);
	if (likely(v)) {
		v->packets += 1;
		v->bytes += bytes;
		return;
	}
	bpf_map_update_elem(&tendril_metrics, &key, &fresh, BPF_NOEXIST);
}

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
 * Every drop leaves through here: it counts the drop in tendril_metrics
 * (@dir METRIC_DIR_*), writes the drop event (reason as the positive code,
 * where: @file and @line) and returns TC_ACT_SHOT. The source identity is
 * what the program learnt so far (skb->cb, 0 if nothing yet). Use the
 * send_drop_notify*() macros, which fill in the object and line.
 */
static __always_inline int __send_drop_notify(struct __sk_buff *skb, int reason, __u16 source,
					      __u8 dir, __u8 file, __u16 line)
{
	struct event_record *e;
	struct flow4 f;

	metrics_count_drop((__u8)-reason, dir, skb->len);
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
	__send_drop_notify(skb, reason, 0, METRIC_DIR_UNKNOWN, EVENT_FILE, __LINE__)
/* Drop with @reason, no endpoint known, in direction @dir (METRIC_DIR_*). */
#define send_drop_notify_dir(skb, reason, dir) \
	__send_drop_notify(skb, reason, 0, dir, EVENT_FILE, __LINE__)
/* Drop of a packet that belongs to endpoint @ep (its ID), direction unknown. */
#define send_drop_notify_ep(skb, reason, ep) \
	__send_drop_notify(skb, reason, ep, METRIC_DIR_UNKNOWN, EVENT_FILE, __LINE__)
/* Drop of a packet of endpoint @ep in direction @dir (METRIC_DIR_*). */
#define send_drop_notify_ep_dir(skb, reason, ep, dir) \
	__send_drop_notify(skb, reason, ep, dir, EVENT_FILE, __LINE__)

#endif /* __TENDRIL_DROP_H_ */
