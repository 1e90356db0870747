/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Drop reasons (negative codes, Cilium numbering) and the drop exit path. */
#ifndef __TENDRIL_DROP_H_
#define __TENDRIL_DROP_H_

#include "common.h"

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

/*
 * Every drop leaves through here so the reason is in one place when drop
 * events exist (the events ring buffer comes with the monitor work). Until
 * then the reason is carried only to this point and the packet is dropped.
 */
static __always_inline int send_drop_notify(struct __sk_buff *skb, int reason)
{
	(void)skb;
	(void)reason;
	return TC_ACT_SHOT;
}

#endif /* __TENDRIL_DROP_H_ */
