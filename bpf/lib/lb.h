/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Service load-balancing, per packet in the endpoint program: a pod's packet
 * to a service frontend (ClusterIP:port) gets a backend's address before
 * conntrack and egress policy see it, and the backend's replies get the
 * frontend back just before they enter the pod. Maps in the spirit of
 * Cilium's lb4_services / lb4_backends / lb4_reverse_nat; layouts mirrored in
 * src/lb/maps.ts.
 */
#ifndef __TENDRIL_LB_H_
#define __TENDRIL_LB_H_

#include <linux/ip.h>
#include <linux/in.h>

#include "common.h"
#include "drop.h"
#include "conntrack.h"
#include "config.h"
#include "identity.h"
#include "maps.h"
#include "ipcache.h"

/* Cilium's DROP_NO_SERVICE: the frontend has no backend (answered with ICMP port unreachable). */
#define DROP_NO_SERVICE		-158

/* Cilium's DROP_NOT_IN_SRC_RANGE: a LoadBalancer IP's client outside the service's loadBalancerSourceRanges. */
#define DROP_NOT_IN_SRC_RANGE	-177

#define LB_SERVICE_MAP_SIZE	65536
#define LB_BACKEND_MAP_SIZE	65536
#define LB_REV_NAT_MAP_SIZE	65536
#define LB_MAGLEV_MAP_SIZE	262144
#define LB_CT_MAP_SIZE		65536
#define LB_AFFINITY_MAP_SIZE	65536
#define LB_SRC_RANGE_MAP_SIZE	65536

/*
 * Key of tendril_lb4_services: the frontend and a slot. Slot 0 is the
 * service itself (count, flags); slots 1..count name its backends.
 */
struct lb4_key {
	__be32	address;	/* service IP */
	__be16	dport;		/* service port */
	__u16	backend_slot;	/* 0: the service entry */
	__u8	proto;		/* IPPROTO_TCP / IPPROTO_UDP */
	__u8	scope;		/* LB_SCOPE_*: which traffic the entry serves */
	__u8	pad[2];
};

_Static_assert(sizeof(struct lb4_key) == 12, "lb4_key must be 12 bytes");

#define LB_F_MAGLEV		1	/* select by the Maglev table, not at random */
#define LB_F_AFFINITY		2	/* sessionAffinity ClientIP */
#define LB_F_EXT_LOCAL		4	/* externalTrafficPolicy Local: traffic from outside uses the LB_SCOPE_EXTERNAL entry */
#define LB_F_EXTERNAL		8	/* served to traffic from outside at its own address (a LoadBalancer IP) */
#define LB_F_SRC_RANGE		16	/* loadBalancerSourceRanges: clients from outside only from tendril_lb4_source_range */

/*
 * lb4_key.scope. Every frontend has its LB_SCOPE_ALL entry, which pods use. A
 * NodePort with externalTrafficPolicy Local has a second one, LB_SCOPE_EXTERNAL,
 * holding only this node's backends, for traffic from outside (Cilium's two
 * scopes, SVC_FLAG_TWO_SCOPES, in spirit).
 */
#define LB_SCOPE_ALL		0
#define LB_SCOPE_EXTERNAL	1

struct lb4_service {
	__u32	backend_id;	/* slot > 0: the backend; slot 0: unused */
	__u16	count;		/* slot 0: number of backend slots */
	__u16	rev_nat_index;	/* the service's ID: reverse NAT and Maglev key */
	__u8	flags;		/* LB_F_* */
	__u8	pad;
	__u16	maglev_size;	/* entries of this service's Maglev table (LB_F_MAGLEV) */
	__u32	affinity_timeout; /* seconds (LB_F_AFFINITY) */
};

_Static_assert(sizeof(struct lb4_service) == 16, "lb4_service must be 16 bytes");

struct lb4_backend {
	__be32	address;
	__be16	port;
	__u8	proto;
	__u8	flags;
};

_Static_assert(sizeof(struct lb4_backend) == 8, "lb4_backend must be 8 bytes");

/* Value of tendril_lb4_reverse_nat (key: rev_nat_index as __u16). */
struct lb4_reverse_nat {
	__be32	address;
	__be16	port;
	__u16	pad;
};

struct lb4_maglev_key {
	__u16	rev_nat_index;
	__u16	pad;
	__u32	index;
};

/* Value of tendril_lb4_ct: a translated connection, by its tuple before (forward) or after (reply) translation. */
struct lb4_ct_entry {
	__u32	backend_id;	/* forward entry */
	__u16	rev_nat_index;
	__be16	orig_port;	/* reply entry: the frontend port the client used */
	__be32	orig_addr;	/* reply entry: the frontend address the client used (a node IP for a NodePort) */
};

struct lb4_affinity_key {
	__be32	client;
	__u16	rev_nat_index;
	__u16	pad;
};

struct lb4_affinity {
	__u32	backend_id;
	__u32	last_used;	/* CLOCK_MONOTONIC seconds */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_key);
	__type(value, struct lb4_service);
	__uint(max_entries, LB_SERVICE_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_lb4_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb4_backend);
	__uint(max_entries, LB_BACKEND_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_lb4_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u16);
	__type(value, struct lb4_reverse_nat);
	__uint(max_entries, LB_REV_NAT_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_lb4_reverse_nat SEC(".maps");

/* (service, index) -> backend ID: the service's Maglev lookup table, computed by the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_maglev_key);
	__type(value, __u32);
	__uint(max_entries, LB_MAGLEV_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_lb4_maglev SEC(".maps");

/*
 * Translated connections. dir CT_EGRESS: the client's tuple to the frontend
 * -> the backend it sticks to. dir CT_INGRESS: the reply tuple from the
 * backend -> the service whose frontend it gets back.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_tuple4);
	__type(value, struct lb4_ct_entry);
	__uint(max_entries, LB_CT_MAP_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_lb4_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_affinity_key);
	__type(value, struct lb4_affinity);
	__uint(max_entries, LB_AFFINITY_MAP_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_lb4_affinity SEC(".maps");

/*
 * Key of tendril_lb4_source_range (LPM trie): the service (rev_nat_index)
 * and a client prefix. prefixlen counts the rev_nat_index and pad bits too
 * (32 + the CIDR's length), so a lookup matches only the service's own
 * ranges (Cilium's lb4_src_range_key in spirit).
 */
struct lb4_src_range_key {
	__u32	prefixlen;
	__u16	rev_nat_index;
	__u16	pad;
	__be32	addr;
};

_Static_assert(sizeof(struct lb4_src_range_key) == 12, "lb4_src_range_key must be 12 bytes");

#define LB_SRC_RANGE_STATIC_PREFIX	32	/* rev_nat_index + pad, in bits */

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lb4_src_range_key);
	__type(value, __u8);
	__uint(max_entries, LB_SRC_RANGE_MAP_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_lb4_source_range SEC(".maps");

/* Whether @saddr may use the frontend @svc: always without LB_F_SRC_RANGE, else when one of its ranges holds it. */
static __always_inline bool lb4_src_range_ok(const struct lb4_service *svc, __be32 saddr)
{
	struct lb4_src_range_key k = {};

	if (!(svc->flags & LB_F_SRC_RANGE))
		return true;
	k.prefixlen = LB_SRC_RANGE_STATIC_PREFIX + 32;
	k.rev_nat_index = svc->rev_nat_index;
	k.addr = saddr;
	return bpf_map_lookup_elem(&tendril_lb4_source_range, &k) != NULL;
}

/* Jenkins-style mix of the 5-tuple, for Maglev (stable per connection). */
static __always_inline __u32 lb4_hash(const struct ct_tuple4 *t)
{
	__u32 h = t->saddr * 0x9e3779b1u;

	h ^= t->daddr + 0x7f4a7c15u + (h << 6) + (h >> 2);
	h ^= ((__u32)t->sport << 16 | t->dport) + 0x7f4a7c15u + (h << 6) + (h >> 2);
	h ^= t->nexthdr + 0x7f4a7c15u + (h << 6) + (h >> 2);
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	return h;
}

/* A backend for a new connection to @svc, or 0 when none is usable. */
static __always_inline __u32 lb4_select_backend(const struct lb4_key *key, const struct lb4_service *svc,
						const struct ct_tuple4 *t)
{
	struct lb4_key slot = *key;
	const struct lb4_service *be;

	if (svc->flags & LB_F_MAGLEV) {
		struct lb4_maglev_key mk = { .rev_nat_index = svc->rev_nat_index };
		const __u32 *id;

		if (!svc->maglev_size)
			return 0;
		mk.index = lb4_hash(t) % svc->maglev_size;
		id = bpf_map_lookup_elem(&tendril_lb4_maglev, &mk);
		return id ? *id : 0;
	}
	slot.backend_slot = (bpf_get_prandom_u32() % svc->count) + 1;
	be = bpf_map_lookup_elem(&tendril_lb4_services, &slot);
	return be ? be->backend_id : 0;
}

/*
 * Rewrite the destination (@reply false) or source (@reply true) address and
 * port of the IPv4 packet, fixing the IP and L4 checksums. Pointers into the
 * packet are invalid afterwards.
 */
static __always_inline int lb4_rewrite(struct __sk_buff *skb, __u8 proto, __u32 l4_off, bool reply,
				       __be32 old_addr, __be32 new_addr, __be16 old_port, __be16 new_port)
{
	__u32 addr_off = ETH_HLEN + (reply ? offsetof(struct iphdr, saddr) : offsetof(struct iphdr, daddr));
	__u32 port_off = l4_off + (reply ? 0 : 2);
	__u32 csum_off;
	__u64 flags = BPF_F_PSEUDO_HDR;

	if (proto == IPPROTO_TCP) {
		csum_off = l4_off + 16;
	} else {
		csum_off = l4_off + 6;
		flags |= BPF_F_MARK_MANGLED_0;
	}
	if (bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr, flags | 4) < 0)
		return DROP_CSUM_L3;
	if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), old_addr, new_addr, 4) < 0)
		return DROP_CSUM_L3;
	if (bpf_skb_store_bytes(skb, addr_off, &new_addr, 4, 0) < 0)
		return DROP_WRITE_ERROR;
	if (old_port != new_port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, (flags & BPF_F_MARK_MANGLED_0) | 2) < 0)
			return DROP_CSUM_L3;
		if (bpf_skb_store_bytes(skb, port_off, &new_port, 2, 0) < 0)
			return DROP_WRITE_ERROR;
	}
	return 0;
}

#define LB_ICMP_QUOTE	28	/* the quoted IP header (no options) and 8 bytes of L4 */

/*
 * Turn the packet into an ICMP port unreachable from the frontend to the
 * sender and send it back into the pod (ifindex @ifindex, MACs swapped).
 * Returns TC_ACT_REDIRECT or a DROP_* code.
 */
static __always_inline int lb4_no_service_reply(struct __sk_buff *skb, __u32 ifindex)
{
	struct {
		struct iphdr	ip;
		__u8		icmp[8];
		__u8		quote[LB_ICMP_QUOTE];
	} r = {};
	struct ethhdr reth;
	void *data, *data_end;
	struct ethhdr *eth;
	struct iphdr *ip;
	__s64 sum;

	if (!ctx_pull(skb, ETH_HLEN + LB_ICMP_QUOTE, &data, &data_end))
		return DROP_INVALID;
	eth = data;
	ip = data + ETH_HLEN;
	if (ip->ihl != 5)
		return DROP_INVALID;
	__builtin_memcpy(r.quote, ip, LB_ICMP_QUOTE);
	__builtin_memcpy(reth.h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(reth.h_source, eth->h_dest, ETH_ALEN);
	reth.h_proto = bpf_htons(ETH_P_IP);
	r.ip.version = 4;
	r.ip.ihl = 5;
	r.ip.tot_len = bpf_htons(sizeof(r));
	r.ip.ttl = 64;
	r.ip.protocol = IPPROTO_ICMP;
	r.ip.saddr = ip->daddr;
	r.ip.daddr = ip->saddr;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&r.ip, sizeof(r.ip), 0);
	if (sum < 0)
		return DROP_CSUM_L3;
	r.ip.check = csum_fold32((__u32)sum) ^ 0xffff;
	r.icmp[0] = ICMP_DEST_UNREACH;
	r.icmp[1] = 3;	/* port unreachable */
	sum = bpf_csum_diff(NULL, 0, (__be32 *)r.icmp, sizeof(r.icmp) + sizeof(r.quote), 0);
	if (sum < 0)
		return DROP_CSUM_L3;
	*(__u16 *)&r.icmp[2] = csum_fold32((__u32)sum) ^ 0xffff;

	if (bpf_skb_change_tail(skb, ETH_HLEN + sizeof(r), 0) < 0)
		return DROP_WRITE_ERROR;
	if (bpf_skb_store_bytes(skb, 0, &reth, ETH_HLEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &r, sizeof(r), BPF_F_INVALIDATE_HASH) < 0)
		return DROP_WRITE_ERROR;
	/* Never 0: the caller goes on with the packet only on 0. */
	return bpf_redirect(ifindex, 0) == TC_ACT_REDIRECT ? TC_ACT_REDIRECT : DROP_WRITE_ERROR;
}

/*
 * A new connection (TCP SYN, or UDP) to no service from a port that once
 * talked to a service: the reply entry of that old connection would rewrite
 * this one's replies, so it goes.
 */
static __always_inline void lb4_forget_reply(const struct ct_pkt *p)
{
	struct ct_tuple4 rev;

	if (p->tuple.nexthdr == IPPROTO_TCP && (p->tcp_flags & (TCP_F_SYN | 0x10)) != TCP_F_SYN)
		return;
	rev.saddr = p->tuple.daddr;
	rev.daddr = p->tuple.saddr;
	rev.sport = p->tuple.dport;
	rev.dport = p->tuple.sport;
	rev.nexthdr = p->tuple.nexthdr;
	rev.dir = CT_INGRESS;
	rev.pad = 0;
	bpf_map_delete_elem(&tendril_lb4_ct, &rev);
}

/*
 * The backend of the connection @t (a client's tuple to the frontend @key of
 * @svc): the one it is pinned to (tendril_lb4_ct), else one chosen now
 * (ClientIP affinity, Maglev or random) and pinned. NULL when the service has
 * no usable backend. *@backend_id is set to the backend's ID.
 */
static __always_inline const struct lb4_backend *lb4_sticky_backend(const struct lb4_key *key,
								      const struct lb4_service *svc,
								      const struct ct_tuple4 *t, __u32 *backend_id)
{
	const struct lb4_backend *be = NULL;
	struct lb4_ct_entry *ce, entry = {};
	struct ct_tuple4 fwd = *t;
	__u32 now = 0;

	*backend_id = 0;
	fwd.dir = CT_EGRESS;
	fwd.pad = 0;
	ce = bpf_map_lookup_elem(&tendril_lb4_ct, &fwd);
	if (ce && ce->rev_nat_index == svc->rev_nat_index) {
		be = bpf_map_lookup_elem(&tendril_lb4_backends, &ce->backend_id);
		if (be) {
			*backend_id = ce->backend_id;
			return be;
		}
	}
	if (svc->count == 0)
		return NULL;
	if (svc->flags & LB_F_AFFINITY) {
		struct lb4_affinity_key ak = { .client = t->saddr, .rev_nat_index = svc->rev_nat_index };
		struct lb4_affinity *a = bpf_map_lookup_elem(&tendril_lb4_affinity, &ak);

		now = ct_now();
		if (a && now - a->last_used <= svc->affinity_timeout) {
			be = bpf_map_lookup_elem(&tendril_lb4_backends, &a->backend_id);
			if (be)
				*backend_id = a->backend_id;
		}
	}
	if (!be) {
		*backend_id = lb4_select_backend(key, svc, t);
		be = *backend_id ? bpf_map_lookup_elem(&tendril_lb4_backends, backend_id) : NULL;
		if (!be)
			return NULL;
	}
	if (svc->flags & LB_F_AFFINITY) {
		struct lb4_affinity_key ak = { .client = t->saddr, .rev_nat_index = svc->rev_nat_index };
		struct lb4_affinity a = { .backend_id = *backend_id, .last_used = now };

		bpf_map_update_elem(&tendril_lb4_affinity, &ak, &a, BPF_ANY);
	}
	entry.backend_id = *backend_id;
	entry.rev_nat_index = svc->rev_nat_index;
	bpf_map_update_elem(&tendril_lb4_ct, &fwd, &entry, BPF_ANY);
	return be;
}

/*
 * Service translation of a packet a pod sends: a frontend gets the backend
 * the connection is pinned to (conntrack), else one chosen now (affinity,
 * Maglev or random). Returns 0 to go on with *@eth / *@ip reloaded and @p
 * describing the translated packet, TC_ACT_REDIRECT when the packet was
 * answered (no backend), or a DROP_* code.
 */
static __always_inline int lb4_from_lxc(struct __sk_buff *skb, struct ethhdr **eth, struct iphdr **ip,
					struct ct_pkt *p, __u16 lxc_id, __u32 ifindex)
{
	struct lb4_key key = {};
	const struct lb4_service *svc;
	const struct lb4_backend *be = NULL;
	struct lb4_ct_entry *ce, *re, entry = {};
	struct ct_tuple4 fwd, rev;
	__u32 backend_id = 0, now = 0;
	bool from_sock;
	int ret;

	/*
	 * Its socket is in socket LB's cgroup (lib/config.h): socket LB gave it
	 * its backend at connect() already, so it goes on untouched, except to a
	 * frontend socket LB leaves to this path (see below).
	 */
	from_sock = CONFIG_SOCK_LB_CGROUP_ID &&
		    bpf_skb_ancestor_cgroup_id(skb, CONFIG_SOCK_LB_CGROUP_LEVEL) == CONFIG_SOCK_LB_CGROUP_ID;
	if (p->tuple.nexthdr != IPPROTO_TCP && p->tuple.nexthdr != IPPROTO_UDP)
		return 0;
	if (p->no_ports || (*ip)->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return 0;
	key.address = p->tuple.daddr;
	key.dport = p->tuple.dport;
	key.proto = p->tuple.nexthdr;
	svc = bpf_map_lookup_elem(&tendril_lb4_services, &key);
	if (!svc) {
		/*
		 * A NodePort: any node's IP, frontend address 0.0.0.0. The port is
		 * looked up first (a hash lookup that misses for nearly every
		 * packet): only a packet to a NodePort's port pays the ipcache's
		 * LPM lookup to see whether it goes to a node.
		 */
		const struct remote_endpoint_info *info;

		key.address = 0;
		svc = bpf_map_lookup_elem(&tendril_lb4_services, &key);
		if (svc && p->tuple.daddr != CONFIG_NODE_IP4 &&
		    !((info = ipcache_lookup4(p->tuple.daddr)) && info->sec_identity == IDENTITY_REMOTE_NODE))
			svc = NULL;
		if (!svc) {
			if (!from_sock)
				lb4_forget_reply(p);
			return 0;
		}
	}

	fwd = p->tuple;
	fwd.dir = CT_EGRESS;
	fwd.pad = 0;
	ce = bpf_map_lookup_elem(&tendril_lb4_ct, &fwd);
	/*
	 * A socket of socket LB's cgroup still talking to a frontend: a
	 * connection this path translated before socket LB came on (it has its
	 * conntrack entry here, and keeps it and its reverse NAT), or a
	 * LoadBalancer IP with loadBalancerSourceRanges whose client address
	 * socket LB could not tell at connect() (sock4_xlate_fwd()). Anything
	 * else is left alone, as before.
	 */
	if (from_sock && !(ce && ce->rev_nat_index == svc->rev_nat_index) && !(svc->flags & LB_F_SRC_RANGE))
		return 0;
	/* loadBalancerSourceRanges hold for pods too (kube-proxy's firewall chain does so). */
	if (!lb4_src_range_ok(svc, p->tuple.saddr))
		return DROP_NOT_IN_SRC_RANGE;	/* the caller counts and reports it */
	if (ce && ce->rev_nat_index == svc->rev_nat_index) {
		be = bpf_map_lookup_elem(&tendril_lb4_backends, &ce->backend_id);
		if (be)
			backend_id = ce->backend_id;
	}
	if (!be) {
		if (svc->count == 0) {
			send_drop_notify_ep_dir(skb, DROP_NO_SERVICE, lxc_id, METRIC_DIR_EGRESS);
			return lb4_no_service_reply(skb, ifindex);
		}
		if (svc->flags & LB_F_AFFINITY) {
			struct lb4_affinity_key ak = { .client = p->tuple.saddr, .rev_nat_index = svc->rev_nat_index };
			struct lb4_affinity *a = bpf_map_lookup_elem(&tendril_lb4_affinity, &ak);

			now = ct_now();
			if (a && now - a->last_used <= svc->affinity_timeout) {
				be = bpf_map_lookup_elem(&tendril_lb4_backends, &a->backend_id);
				if (be)
					backend_id = a->backend_id;
			}
		}
		if (!be) {
			backend_id = lb4_select_backend(&key, svc, &p->tuple);
			be = backend_id ? bpf_map_lookup_elem(&tendril_lb4_backends, &backend_id) : NULL;
			if (!be) {
				send_drop_notify_ep_dir(skb, DROP_NO_SERVICE, lxc_id, METRIC_DIR_EGRESS);
				return lb4_no_service_reply(skb, ifindex);
			}
		}
		if (svc->flags & LB_F_AFFINITY) {
			struct lb4_affinity_key ak = { .client = p->tuple.saddr, .rev_nat_index = svc->rev_nat_index };
			struct lb4_affinity a = { .backend_id = backend_id, .last_used = now };

			bpf_map_update_elem(&tendril_lb4_affinity, &ak, &a, BPF_ANY);
		}
		entry.backend_id = backend_id;
		entry.rev_nat_index = svc->rev_nat_index;
		bpf_map_update_elem(&tendril_lb4_ct, &fwd, &entry, BPF_ANY);
	}

	/* The reply's tuple as it arrives at the client's endpoint. */
	rev.saddr = be->address;
	rev.daddr = p->tuple.saddr;
	rev.sport = be->port;
	rev.dport = p->tuple.sport;
	rev.nexthdr = p->tuple.nexthdr;
	rev.dir = CT_INGRESS;
	rev.pad = 0;
	entry.backend_id = backend_id;
	entry.rev_nat_index = svc->rev_nat_index;
	entry.orig_addr = p->tuple.daddr;
	entry.orig_port = p->tuple.dport;
	/* Written when absent or stale: an earlier connection from the same client
	 * port to the same backend through another frontend would otherwise give
	 * this connection's replies that frontend's address. */
	re = bpf_map_lookup_elem(&tendril_lb4_ct, &rev);
	if (!re || re->rev_nat_index != entry.rev_nat_index || re->orig_addr != entry.orig_addr ||
	    re->orig_port != entry.orig_port)
		bpf_map_update_elem(&tendril_lb4_ct, &rev, &entry, BPF_ANY);

	ret = lb4_rewrite(skb, p->tuple.nexthdr, ETH_HLEN + (*ip)->ihl * 4, false,
			  p->tuple.daddr, be->address, p->tuple.dport, be->port);
	if (ret)
		return ret;
	p->tuple.daddr = be->address;
	p->tuple.dport = be->port;
	p->policy_dport = be->port;
	return ipv4_load(skb, eth, ip);
}

/*
 * Reverse translation of a packet about to enter a pod: a reply of a
 * translated connection gets its service frontend back as the source.
 * Returns 0 (with *@eth / *@ip reloaded when rewritten) or a DROP_* code.
 */
static __always_inline int lb4_rev_nat(struct __sk_buff *skb, struct ethhdr **eth, struct iphdr **ip,
				       const struct ct_pkt *p)
{
	const struct lb4_reverse_nat *rn;
	const struct lb4_ct_entry *ce;
	struct ct_tuple4 rev = p->tuple;
	__u16 index;
	int ret;

	if (rev.nexthdr != IPPROTO_TCP && rev.nexthdr != IPPROTO_UDP)
		return 0;
	if (p->no_ports || (*ip)->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return 0;
	rev.dir = CT_INGRESS;
	rev.pad = 0;
	ce = bpf_map_lookup_elem(&tendril_lb4_ct, &rev);
	if (!ce)
		return 0;
	index = ce->rev_nat_index;
	rn = bpf_map_lookup_elem(&tendril_lb4_reverse_nat, &index);
	if (!rn)
		return 0;
	/* A NodePort's frontend is every node IP: the one this client used is in the entry. */
	ret = lb4_rewrite(skb, rev.nexthdr, ETH_HLEN + (*ip)->ihl * 4, true, rev.saddr,
			  rn->address ? rn->address : ce->orig_addr, rev.sport, rn->address ? rn->port : ce->orig_port);
	if (ret)
		return ret;
	return ipv4_load(skb, eth, ip);
}

#endif /* __TENDRIL_LB_H_ */
