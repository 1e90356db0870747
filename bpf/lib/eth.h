/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Ethernet header helpers. */
#ifndef __TENDRIL_ETH_H_
#define __TENDRIL_ETH_H_

#include "common.h"

static __always_inline bool eth_is_bcast(const __u8 *mac)
{
	return (mac[0] & mac[1] & mac[2] & mac[3] & mac[4] & mac[5]) == 0xff;
}

static __always_inline bool eth_addr_equal(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] &&
	       a[3] == b[3] && a[4] == b[4] && a[5] == b[5];
}

/* Rewrite both addresses in place; @eth must be a checked packet pointer. */
static __always_inline void eth_rewrite(struct ethhdr *eth, const __u8 *src,
					const __u8 *dst)
{
	__builtin_memcpy(eth->h_source, src, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, dst, ETH_ALEN);
}

#endif /* __TENDRIL_ETH_H_ */
