/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Reserved security identities (Cilium's numbering) and where a packet's source identity is kept. */
#ifndef __TENDRIL_IDENTITY_H_
#define __TENDRIL_IDENTITY_H_

#include "common.h"

#define IDENTITY_UNKNOWN	0
#define IDENTITY_HOST		1
#define IDENTITY_WORLD		2
#define IDENTITY_HEALTH		4
#define IDENTITY_REMOTE_NODE	6

/*
 * skb->cb slot carrying the source identity from the hook that learnt it to
 * the policy code that needs it (Cilium's CB_SRC_LABEL). cb rather than mark:
 * bpf_redirect_peer keeps the mark, and it would leak into the pod.
 */
#define CB_SRC_IDENTITY		0

static __always_inline void set_src_identity(struct __sk_buff *skb, __u32 identity)
{
	skb->cb[CB_SRC_IDENTITY] = identity;
}

#endif /* __TENDRIL_IDENTITY_H_ */
