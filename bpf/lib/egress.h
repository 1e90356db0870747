/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Egress gateway (Cilium's lib/egress_gateway.h, our own code): pod traffic
 * a TendrilEgressGatewayPolicy selects is tunnelled to the gateway node and
 * leaves it SNATed to the policy's egress IP (lib/nat.h with that address).
 */
#ifndef __TENDRIL_EGRESS_H_
#define __TENDRIL_EGRESS_H_

#include "common.h"
#include "config.h"
#include "drop.h"
#include "maps.h"

#define EGRESS_POLICY_MAP_SIZE	16384
#define EGRESS_IP_MAP_SIZE	256
/* prefixlen counts the source address (always a /32) before the destination CIDR's bits. */
#define EGRESS_STATIC_PREFIX_BITS	32
/* gateway_ip of an excludedCIDRs entry: the destination is not redirected (Cilium's EGRESS_GATEWAY_EXCLUDED_CIDR). */
#define EGRESS_GW_EXCLUDED	bpf_htonl(1)
/* Identities from here on are node-local CIDR identities of the world (as IDENTITY_LOCAL_MIN in nat.h). */
#define EGRESS_IDENTITY_LOCAL_MIN	0x01000001

/* Key of tendril_egress_gw_policy_v4 (LPM: the source exactly, then the destination prefix). */
struct egress_gw_policy_key {
	__u32	prefixlen;	/* EGRESS_STATIC_PREFIX_BITS + destination mask bits */
	__be32	saddr;
	__be32	daddr;
};

_Static_assert(sizeof(struct egress_gw_policy_key) == 12, "egress_gw_policy_key must be 12 bytes");

struct egress_gw_policy_entry {
	__be32	egress_ip;	/* the source the traffic leaves the gateway with */
	__be32	gateway_ip;	/* underlay IP of the gateway node, or EGRESS_GW_EXCLUDED */
};

_Static_assert(sizeof(struct egress_gw_policy_entry) == 8, "egress_gw_policy_entry must be 8 bytes");

/* (pod IP, destination CIDR) -> gateway and egress IP: every selected pod of the cluster, on every node. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct egress_gw_policy_key);
	__type(value, struct egress_gw_policy_entry);
	__uint(max_entries, EGRESS_POLICY_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_egress_gw_policy_v4 SEC(".maps");

/* The egress IPs this node is the gateway of (value unused): replies to them are reverse-NATed. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, __u8);
	__uint(max_entries, EGRESS_IP_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_egress_ip_v4 SEC(".maps");

/*
 * Index 0: EGRESS_GW_STATE_EMPTY when the agent knows tendril_egress_gw_policy_v4
 * to be empty (it writes it after emptying the map, and clears it before the
 * first entry goes in); then no packet pays for the LPM lookup. 0, what a
 * new map holds, consults the map: a datapath never skips a policy it has.
 */
#define EGRESS_GW_STATE_EMPTY	1

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_egress_gw_state SEC(".maps");

/* The policy entry for traffic @saddr -> @daddr, or NULL. An excludedCIDRs entry is returned as such. */
static __always_inline const struct egress_gw_policy_entry *egress_gw_lookup4(__be32 saddr, __be32 daddr)
{
	struct egress_gw_policy_key key = {
		.prefixlen = EGRESS_STATIC_PREFIX_BITS + 32,
		.saddr = saddr,
		.daddr = daddr,
	};
	__u32 zero = 0, *state;

	/* An array lookup the verifier inlines: a few instructions in place of the trie walk. */
	state = bpf_map_lookup_elem(&tendril_egress_gw_state, &zero);
	if (state && *state == EGRESS_GW_STATE_EMPTY)
		return NULL;
	return bpf_map_lookup_elem(&tendril_egress_gw_policy_v4, &key);
}

/*
 * Pod side (cil_from_container): the gateway node a pod's packet to the
 * world (@info: the destination's ipcache entry, NULL = world) is tunnelled
 * to, or 0: no policy, an excluded CIDR, or this node is the gateway (then
 * the stack routes it to the native device, where egress_gw_snat_addr4() applies).
 */
static __always_inline __be32 egress_gw_redirect4(__be32 saddr, __be32 daddr, const struct remote_endpoint_info *info)
{
	const struct egress_gw_policy_entry *e;

	if (info && info->sec_identity != IDENTITY_WORLD && info->sec_identity < EGRESS_IDENTITY_LOCAL_MIN)
		return 0;	/* the cluster: pods, nodes */
	e = egress_gw_lookup4(saddr, daddr);
	if (!e || e->gateway_ip == EGRESS_GW_EXCLUDED || e->gateway_ip == CONFIG_NODE_IP4)
		return 0;
	return e->gateway_ip;
}

/* egress_gw_snat_addr4(): the packet is on its way to another node, the gateway (native routing): no SNAT here. */
#define EGRESS_GW_ELSEWHERE	0xffffffff

/*
 * Native device egress (cil_to_netdev): the address traffic @saddr -> @daddr
 * leaves with when this node is its gateway; EGRESS_GW_ELSEWHERE when another
 * node is (in native routing the pod's packet leaves here for the gateway
 * unchanged); 0 when no policy applies (the node's own masquerading does).
 * Global, so verified once: its ways (no policy known, none found, one
 * found) would otherwise each be walked through snat4_egress()'s new-flow
 * loop, past the verifier's limit.
 */
__attribute__((noinline)) __be32 egress_gw_snat_addr4(__be32 saddr, __be32 daddr)
{
	const struct egress_gw_policy_entry *e = egress_gw_lookup4(saddr, daddr);

	if (!e || e->gateway_ip == EGRESS_GW_EXCLUDED)
		return 0;
	if (e->gateway_ip != CONFIG_NODE_IP4)
		return EGRESS_GW_ELSEWHERE;
	return e->egress_ip;
}

/*
 * Pod side in native routing, the packet goes unencapsulated to the gateway
 * node as next hop (its destination unchanged): fib_redirect4_to(@gateway)
 * (lib/fib.h, which lxc.c includes); the gateway's stack forwards it to its
 * native device, where it is SNATed. TC_ACT_OK when the FIB cannot reach the
 * gateway: then the node's own masquerading applies.
 */

/*
 * Another node's pod's packet a policy sends to another gateway reached this
 * node's native device: the pod's node still takes this node for the gateway
 * (its agent has not seen the gateway move, e.g. it is down). It is dropped,
 * as Cilium does (DROP_NO_EGRESS_IP): left alone it would leave with the
 * pod's address, which the world cannot answer and which the policy meant to
 * hide; forwarding it to the new gateway would trust a tunnel header anyone on
 * the underlay can write, and two nodes whose maps disagree would bounce it.
 * The pod's node sends to the right gateway once its agent is back.
 */
static __always_inline int egress_gw_not_here4(void)
{
	return DROP_NO_EGRESS_IP;
}

/* Is @addr an egress IP of this node (a reply to it may belong to a translated flow)? */
static __always_inline bool egress_gw_local_ip4(__be32 addr)
{
	return bpf_map_lookup_elem(&tendril_egress_ip_v4, &addr) != NULL;
}

#endif /* __TENDRIL_EGRESS_H_ */
