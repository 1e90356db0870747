// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* host.o plus a test entry that reports the tunnel key cil_from_host set (see harness.h). */

#include "../host.c"
#include "harness.h"

SEC("tc")
int test_from_host(struct __sk_buff *skb)
{
	int ret = from_host_notify(skb);

	harness_store_tunnel_key(skb);
	return ret;
}
