/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* IPv4 header access and TTL handling. */
#ifndef __TENDRIL_IPV4_H_
#define __TENDRIL_IPV4_H_

#include <linux/ip.h>

#include "common.h"
#include "csum.h"
#include "drop.h"

/*
 * Load Ethernet + IPv4 headers. Returns 0 with @eth/@ip set, or a DROP_* code
 * for a header that is truncated or not a well-formed IPv4 header.
 */
static __always_inline int ipv4_load(struct __sk_buff *skb, struct ethhdr **eth,
				     struct iphdr **ip)
{
	void *data, *data_end;
	struct iphdr *iph;

	if (!ctx_pull(skb, sizeof(struct ethhdr) + sizeof(struct iphdr),
		      &data, &data_end))
		return DROP_INVALID;

	iph = data + sizeof(struct ethhdr);
	if (iph->version != 4 || iph->ihl < 5)
		return DROP_INVALID;

	*eth = data;
	*ip = iph;
	return 0;
}

/*
 * Forwarding hop: TTL - 1 with the header checksum fixed incrementally. TTL
 * shares a 16-bit checksum word with the protocol byte, so that word is what
 * changes. Callers check ttl > 1 first.
 */
static __always_inline void ipv4_dec_ttl(struct iphdr *ip)
{
	__be16 old = *(__be16 *)&ip->ttl;

	ip->ttl--;
	ip->check = csum_replace2(ip->check, old, *(__be16 *)&ip->ttl);
}

#endif /* __TENDRIL_IPV4_H_ */
