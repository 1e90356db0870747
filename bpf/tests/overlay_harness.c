// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* overlay.o plus a test entry that runs cil_from_overlay on a packet carrying a tunnel key (see harness.h). */

#include "../overlay.c"
#include "harness.h"

SEC("tc")
int test_from_overlay(struct __sk_buff *skb)
{
	if (harness_attach_rx_key(skb) < 0)
		return TC_ACT_SHOT;
	return from_overlay_notify(skb);
}
