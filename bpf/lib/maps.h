/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Map layouts shared with the agent (src/datapath/maps.ts must match). */
#ifndef __TENDRIL_MAPS_H_
#define __TENDRIL_MAPS_H_

#include "common.h"

#define ENDPOINTS_MAP_SIZE	65535

/* Key of tendril_lxc. */
struct endpoint_key {
	__be32 ip4;
};

#define ENDPOINT_F_HOST		1	/* a local host address: deliver to the stack */
#define ENDPOINT_F_INGRESS_ENFORCED	2	/* ingress policy enforced: no allow entry = drop */
#define ENDPOINT_F_EGRESS_ENFORCED	4	/* egress policy enforced */

/*
 * Value of tendril_lxc and tendril_lxc_if. 28 bytes with no implicit padding:
 * the agent writes it byte for byte and a test compares the layout from BTF.
 */
struct endpoint_info {
	__u32	ifindex;	/* host-side veth (lxc...) ifindex */
	__u16	lxc_id;		/* endpoint ID */
	__u16	flags;		/* ENDPOINT_F_* */
	__u8	mac[6];		/* pod-side MAC (eth0 inside the pod) */
	__u8	node_mac[6];	/* host-side veth MAC (the pod's gateway MAC) */
	__u32	sec_id;		/* security identity */
	__be32	ip4;		/* the endpoint's IPv4 address */
};

_Static_assert(sizeof(struct endpoint_info) == 28, "endpoint_info must be 28 bytes");

/*
 * Pinned by name so both objects share one instance and the agent finds the
 * same maps again after a restart.
 */

/* Destination lookup: endpoint IPv4 -> endpoint. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
	__uint(max_entries, ENDPOINTS_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_lxc SEC(".maps");

/* Source lookup in from_container: host-side veth ifindex -> endpoint. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct endpoint_info);
	__uint(max_entries, ENDPOINTS_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_lxc_if SEC(".maps");

#define IPCACHE_MAP_SIZE	512000

/* endpoint family of ipcache_key.family, as Cilium's ENDPOINT_KEY_IPV4. */
#define IPCACHE_FAMILY_IPV4	1
/* ipcache_key.prefixlen counts the static members before the address too. */
#define IPCACHE_STATIC_PREFIX_BITS	32

/*
 * Key of tendril_ipcache (LPM trie, Cilium's layout for IPv4): the trie
 * matches on prefixlen bits starting at cluster_id, so cluster_id, pad and
 * family always match exactly and the rest is the address prefix.
 */
struct ipcache_key {
	__u32	prefixlen;	/* IPCACHE_STATIC_PREFIX_BITS + mask bits */
	__u16	cluster_id;
	__u8	pad;
	__u8	family;		/* IPCACHE_FAMILY_IPV4 */
	__be32	ip4;
};

_Static_assert(sizeof(struct ipcache_key) == 12, "ipcache_key must be 12 bytes");

#define IPCACHE_F_HAS_TUNNEL_EP	1	/* tunnel_endpoint is set: encapsulate to it */
#define IPCACHE_F_SKIP_TUNNEL	2	/* never encapsulate, even in tunnel mode */

/* Value of tendril_ipcache: who owns a prefix and how to reach it. */
struct remote_endpoint_info {
	__u32	sec_identity;		/* security identity of the prefix */
	__be32	tunnel_endpoint;	/* underlay IPv4 of the node hosting it */
	__u16	node_id;
	__u8	flags;			/* IPCACHE_F_* */
	__u8	key;			/* encryption key index (unused) */
};

_Static_assert(sizeof(struct remote_endpoint_info) == 12, "remote_endpoint_info must be 12 bytes");

/* Prefix -> identity and tunnel endpoint: local endpoints, remote pod CIDRs, node IPs. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct remote_endpoint_info);
	__uint(max_entries, IPCACHE_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_ipcache SEC(".maps");

#endif /* __TENDRIL_MAPS_H_ */
