// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* lxc.o plus a test entry that reports the tunnel key cil_from_container set (see harness.h). */

#include "../lxc.c"
#include "harness.h"

SEC("tc")
int test_from_container(struct __sk_buff *skb)
{
	int ret = from_container_notify(skb);

	harness_store_tunnel_key(skb);
	return ret;
}
