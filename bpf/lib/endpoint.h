/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Endpoint lookups: which local endpoint a packet comes from or goes to. */
#ifndef __TENDRIL_ENDPOINT_H_
#define __TENDRIL_ENDPOINT_H_

#include "common.h"
#include "maps.h"

/* The endpoint whose host-side veth is @ifindex, or NULL. */
static __always_inline const struct endpoint_info *
lookup_ep_by_ifindex(__u32 ifindex)
{
	return bpf_map_lookup_elem(&tendril_lxc_if, &ifindex);
}

/* The local endpoint (pod or host address) that owns @ip4, or NULL. */
static __always_inline const struct endpoint_info *
lookup_ip4_endpoint(__be32 ip4)
{
	struct endpoint_key key = { .ip4 = ip4 };

	return bpf_map_lookup_elem(&tendril_lxc, &key);
}

/* A host address lives in tendril_lxc too but is delivered by the stack. */
static __always_inline bool ep_is_host(const struct endpoint_info *ep)
{
	return ep->flags & ENDPOINT_F_HOST;
}

#endif /* __TENDRIL_ENDPOINT_H_ */
