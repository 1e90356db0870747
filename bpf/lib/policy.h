/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Policy enforcement: the node's policy trie, the verdict for a packet at an endpoint, and conntrack around it. */
#ifndef __TENDRIL_POLICY_H_
#define __TENDRIL_POLICY_H_

#include "common.h"
#include "config.h"
#include "events.h"
#include "drop.h"
#include "maps.h"
#include "conntrack.h"

/*
 * One trie for every endpoint of the node (the endpoint ID is part of the
 * key), so a policy change is map updates and never a program reload. No
 * prealloc: memory follows the entries in use (~100 bytes each). 131072
 * leaves room for one endpoint with 10,000+ entries next to many small ones.
 */
#define POLICY_MAP_SIZE			131072
/* sec_label, ep_id and egress always match: 32 + 16 + 8 bits. */
#define POLICY_STATIC_PREFIX_BITS	56
#define POLICY_PROTO_BITS		8
#define POLICY_FULL_PREFIX_BITS		(POLICY_STATIC_PREFIX_BITS + POLICY_PROTO_BITS + 16)

/*
 * Key of tendril_policy (LPM trie). The trie matches prefixlen bits from
 * sec_label on: an entry names its identity (0 = any), endpoint and
 * direction exactly, then optionally the protocol (8 bits) and a prefix of
 * the destination port (network order, so a port range is a bit prefix).
 */
struct policy_key {
	__u32	prefixlen;
	__u32	sec_label;	/* remote identity, 0 = any */
	__u16	ep_id;
	__u8	egress;		/* 1 egress, 0 ingress */
	__u8	protocol;	/* 0 = any */
	__be16	dport;
	__u16	pad;
};

/* No holes: the agent writes the key byte for byte (pad is outside any prefix). */
_Static_assert(sizeof(struct policy_key) == 16, "policy_key must be 16 bytes");

/* Value of tendril_policy. */
struct policy_entry {
	__u8	deny;
	__u8	l4_prefix_len;	/* 0 any protocol, 8 protocol only, 8 + port bits: the match type reported */
	__u16	proxy_port;	/* L7: redirect to the node proxy on this port (host order), 0 = none */
	__u32	pad2;
	__u64	packets;	/* packets the entry decided, atomic adds */
	__u64	bytes;
};

_Static_assert(sizeof(struct policy_entry) == 24, "policy_entry must be 24 bytes");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct policy_key);
	__type(value, struct policy_entry);
	__uint(max_entries, POLICY_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_policy SEC(".maps");

/*
 * Kubernetes NetworkPolicy ipBlock peers match addresses, not identities:
 * every address in the block, pods and nodes included. This trie maps each
 * block and except a NetworkPolicy names to a node-local identity of its
 * own (never found in the ipcache); the longest block containing the remote
 * address is looked up as a third identity, so an ipBlock entry decides by
 * address whatever identity the ipcache gives the address. Cilium-style
 * CIDR peers (TendrilNetworkPolicy toCIDR) stay in the ipcache and match
 * only addresses outside the cluster.
 */
#define IPBLOCK_MAP_SIZE		16384

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, __u32);		/* identity of the block */
	__uint(max_entries, IPBLOCK_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_ipblock SEC(".maps");

/* Identity of the narrowest ipBlock containing @ip4, 0 when none does. */
static __always_inline __u32 ipblock_identity4(__be32 ip4)
{
	struct ipcache_key key = {
		.prefixlen = IPCACHE_STATIC_PREFIX_BITS + 32,
		.family = IPCACHE_FAMILY_IPV4,
		.ip4 = ip4,
	};
	const __u32 *id = bpf_map_lookup_elem(&tendril_ipblock, &key);

	return id ? *id : 0;
}

/* Match type of an allow entry, for the verdict event (Cilium's PolicyMatchType). */
static __always_inline __u8 policy_match_type(const struct policy_entry *e, bool specific)
{
	if (e->l4_prefix_len == 0)
		return specific ? VERDICT_MATCH_L3_ONLY : VERDICT_MATCH_ALL;
	if (e->l4_prefix_len == POLICY_PROTO_BITS)
		return specific ? VERDICT_MATCH_L3_PROTO : VERDICT_MATCH_PROTO_ONLY;
	return specific ? VERDICT_MATCH_L3_L4 : VERDICT_MATCH_L4_ONLY;
}

/* The better of two hits, @a on a tie: a deny, else the longer L4 prefix. */
static __always_inline struct policy_entry *policy_better(struct policy_entry *a, struct policy_entry *b)
{
	if (!a)
		return b;
	if (!b || a->deny)
		return a;
	if (b->deny)
		return b;
	return a->l4_prefix_len >= b->l4_prefix_len ? a : b;
}

/*
 * The verdict of endpoint @ep_id's policy for remote identity @remote at
 * address @remote_ip, protocol and port, in one direction: longest-prefix
 * lookups with the identity, with the address's ipBlock identity (if any)
 * and with "any". A deny in any wins; else the hit with the longer L4
 * prefix (the specific identity, then the ipBlock one, on a tie) allows and
 * counts the packet. Returns 0 (allow) or DROP_POLICY_DENY / DROP_POLICY,
 * and the match type; @proxy_port the allowing entry's proxy port (0 = none).
 *
 * For ICMP, @dport holds the message's type and code bytes as on the wire
 * (type in the high byte in network order): an entry of port prefix 8
 * matches a type, 16 a type and code.
 */
static __always_inline int policy_can_access(__u16 ep_id, bool egress, __u32 remote, __be32 remote_ip,
					     __u8 proto, __be16 dport, __u32 len, __u8 *match,
					     __u16 *proxy_port)
{
	struct policy_key key = {
		.prefixlen = POLICY_FULL_PREFIX_BITS,
		.sec_label = remote,
		.ep_id = ep_id,
		.egress = egress,
		.protocol = proto,
		.dport = dport,
	};
	struct policy_entry *l3, *blk = NULL, *any, *hit;
	__u32 block = ipblock_identity4(remote_ip);

	l3 = bpf_map_lookup_elem(&tendril_policy, &key);
	if (block) {
		key.sec_label = block;
		blk = bpf_map_lookup_elem(&tendril_policy, &key);
	}
	key.sec_label = 0;
	any = bpf_map_lookup_elem(&tendril_policy, &key);

	*match = VERDICT_MATCH_NONE;
	*proxy_port = 0;
	hit = policy_better(policy_better(l3, blk), any);
	if (!hit)
		return DROP_POLICY;
	__sync_fetch_and_add(&hit->packets, 1);
	__sync_fetch_and_add(&hit->bytes, len);
	*match = policy_match_type(hit, hit != any);
	if (hit->deny)
		return DROP_POLICY_DENY;
	*proxy_port = hit->proxy_port;
	return 0;
}

/*
 * Conntrack and policy of packet @p at endpoint @ep, in direction @dir
 * (CT_EGRESS: @ep sends it; CT_INGRESS: @ep receives it). @remote is the
 * identity of the other side, @src_sec_id the packet's source identity
 * (kept in a new entry).
 *
 * Replies and ICMP errors of tracked flows pass without policy; new and
 * established flows are looked up when the endpoint enforces the direction
 * (so a removed rule cuts live flows). A new flow gets its entry once
 * allowed; conntrack runs whether or not policy is enforced, so enforcing
 * later does not cut the replies of existing connections.
 *
 * Returns 0 to go on, or TC_ACT_SHOT after the verdict and drop events.
 */
static __always_inline int ct_policy4(struct __sk_buff *skb, struct ct_pkt *p,
				      const struct endpoint_info *ep, __u8 dir, __u32 remote,
				      __u32 src_sec_id, __u32 now)
{
	bool egress = dir == CT_EGRESS;
	__u16 enforced = egress ? ENDPOINT_F_EGRESS_ENFORCED : ENDPOINT_F_INGRESS_ENFORCED;
	__u8 match, vdir = egress ? VERDICT_DIR_EGRESS : VERDICT_DIR_INGRESS;
	int status, ret;

	p->proxy_port = 0;
	status = ct_lookup4(p, dir, now);
	if (status == CT_REPLY || status == CT_RELATED)
		return 0;
	if (ep->flags & enforced) {
		ret = policy_can_access(ep->lxc_id, egress, remote,
					egress ? p->tuple.daddr : p->tuple.saddr, p->tuple.nexthdr,
					p->policy_dport, p->len, &match, &p->proxy_port);
		if (ret < 0 || status == CT_NEW)
			send_policy_verdict_notify(skb, ep->lxc_id, egress ? ep->sec_id : remote,
						   egress ? remote : ep->sec_id, vdir, p->tuple.nexthdr,
						   bpf_ntohs(p->policy_dport),
						   ret < 0 ? VERDICT_DENY : VERDICT_ALLOW, match);
		if (ret < 0)
			return send_drop_notify_ep_dir(skb, ret, ep->lxc_id,
						       egress ? METRIC_DIR_EGRESS : METRIC_DIR_INGRESS);
	}
	if (status == CT_NEW)
		ct_create4(p, src_sec_id, now);
	return 0;
}

#endif /* __TENDRIL_POLICY_H_ */
