// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* lxc.o with a one-page events ring (a test fills it to see lost events), and a policy-verdict emitter. */

#define EVENTS_RING_SIZE	4096

#include "../lxc.c"

/*
 * Nothing emits policy verdicts until policy exists; this proves the helper
 * passes the verifier and writes what the decoder reads. Arguments come from
 * cb: [0] source endpoint, [1] remote identity, [2] dir << 16 | proto << 8 |
 * match, [3] action, [4] destination port.
 */
SEC("tc")
int test_policy_verdict(struct __sk_buff *skb)
{
	__u32 packed = skb->cb[2];

	send_policy_verdict_notify(skb, skb->cb[0], skb->cb[1], 0, packed >> 16, (packed >> 8) & 0xff,
				   skb->cb[4], skb->cb[3], packed & 0xff);
	return TC_ACT_OK;
}
