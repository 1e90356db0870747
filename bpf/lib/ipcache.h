/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* ipcache lookups: which identity owns an address and which node hosts it. */
#ifndef __TENDRIL_IPCACHE_H_
#define __TENDRIL_IPCACHE_H_

#include "common.h"
#include "config.h"
#include "identity.h"
#include "maps.h"

/* Longest-prefix match of @ip4; NULL when no prefix covers it (world). */
static __always_inline const struct remote_endpoint_info *
ipcache_lookup4(__be32 ip4)
{
	struct ipcache_key key = {
		.prefixlen = IPCACHE_STATIC_PREFIX_BITS + 32,
		.family = IPCACHE_FAMILY_IPV4,
		.ip4 = ip4,
	};

	return bpf_map_lookup_elem(&tendril_ipcache, &key);
}

/* Identity of @ip4 as the policy sees it: a miss is the world. */
static __always_inline __u32 ipcache_identity4(__be32 ip4)
{
	const struct remote_endpoint_info *info = ipcache_lookup4(ip4);

	return info ? info->sec_identity : IDENTITY_WORLD;
}

/* In tunnel mode, the underlay address to encapsulate to, or 0 to leave the packet unencapsulated. */
static __always_inline __be32 ipcache_tunnel_endpoint(const struct remote_endpoint_info *info)
{
	if (!info || !tunnel_mode())
		return 0;
	if (!(info->flags & IPCACHE_F_HAS_TUNNEL_EP) || (info->flags & IPCACHE_F_SKIP_TUNNEL))
		return 0;
	return info->tunnel_endpoint;
}

#endif /* __TENDRIL_IPCACHE_H_ */
