/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Socket-level load-balancing: cgroup sock_addr programs on a node's cgroup
 * (never the machine's root cgroup). A socket of a process in that cgroup
 * connecting or sending to a service frontend (ClusterIP, LB IP, a NodePort
 * on this node's IP or on loopback, or on another node's IP) gets a backend
 * as its destination before the first packet is built, so the per-packet
 * translation in the endpoint program never sees the frontend. UDP replies
 * and getpeername() get the frontend back through tendril_lb4_sock_rev,
 * keyed by the socket cookie. Same maps and backend selection as lib/lb.h;
 * semantics as Cilium's bpf_sock.c (sock4_connect / sock4_sendmsg /
 * sock4_recvmsg / sock4_getpeername), our own code.
 */
/* lib/lb.h brings the per-packet helpers and their event code along; these programs emit no event. */
#define EVENT_FILE	EVENT_FILE_HOST

#include <linux/in.h>
#include <linux/errno.h>

#include "lib/common.h"
#include "lib/config.h"
#include "lib/events.h"
#include "lib/drop.h"
#include "lib/maps.h"
#include "lib/eth.h"
#include "lib/ipv4.h"
#include "lib/identity.h"
#include "lib/ipcache.h"
#include "lib/conntrack.h"
#include "lib/lb.h"

#define SYS_REJECT	0
#define SYS_PROCEED	1

#define LB_SOCK_MAP_SIZE	65536

/* A socket's translated destination: its cookie and the backend address. */
struct lb4_sock_key {
	__u64	cookie;
	__be32	address;
	__be16	port;
	__u16	pad;
};

_Static_assert(sizeof(struct lb4_sock_key) == 16, "lb4_sock_key must be 16 bytes");

/* The frontend the socket asked for, and the service it belongs to. */
struct lb4_sock_rev {
	__be32	address;
	__be16	port;
	__u16	rev_nat_index;
};

/* (cookie, backend) -> frontend: recvmsg / getpeername give the frontend back. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_sock_key);
	__type(value, struct lb4_sock_rev);
	__uint(max_entries, LB_SOCK_MAP_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_lb4_sock_rev SEC(".maps");

/* A socket's backend per frontend (unconnected UDP: every datagram of the socket to one backend). */
struct lb4_sock_fwd {
	__u32	backend_id;
	__u16	rev_nat_index;
	__u16	pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_sock_key);
	__type(value, struct lb4_sock_fwd);
	__uint(max_entries, LB_SOCK_MAP_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tendril_lb4_sock_fwd SEC(".maps");

static __always_inline bool sock4_is_loopback(__be32 addr)
{
	return (bpf_ntohl(addr) >> 24) == 127;
}

/*
 * A frontend without backends: the syscall fails with ECONNREFUSED (as a TCP
 * RST would tell the per-packet path's client), not the EPERM a plain reject
 * gives, and the drop is counted under the per-packet path's reason
 * (DROP_NO_SERVICE, egress) in tendril_metrics.
 */
static __always_inline int sock4_no_service(void)
{
	metrics_count_drop((__u8)-DROP_NO_SERVICE, METRIC_DIR_EGRESS, 0);
	bpf_set_retval(-ECONNREFUSED);
	return SYS_REJECT;
}

/* The service entry of frontend @addr:@port, with the NodePort entry (address 0) for node addresses. */
static __always_inline const struct lb4_service *sock4_lookup(struct lb4_key *key, __be32 addr, __be16 port, __u8 proto)
{
	const struct lb4_service *svc;
	const struct remote_endpoint_info *info;

	key->address = addr;
	key->dport = port;
	key->proto = proto;
	key->backend_slot = 0;
	key->scope = LB_SCOPE_ALL;
	svc = bpf_map_lookup_elem(&tendril_lb4_services, key);
	if (svc)
		return svc;
	if (addr != CONFIG_NODE_IP4 && !sock4_is_loopback(addr)) {
		info = ipcache_lookup4(addr);
		if (!info || info->sec_identity != IDENTITY_REMOTE_NODE)
			return NULL;
	}
	key->address = 0;
	return bpf_map_lookup_elem(&tendril_lb4_services, key);
}

/* Client identity for ClientIP affinity: the socket's network namespace (Cilium uses its netns cookie too). */
static __always_inline __be32 sock4_client(struct bpf_sock_addr *ctx)
{
	__u64 c = bpf_get_netns_cookie(ctx);

	return (__be32)(c ^ (c >> 32));
}

/* A backend for a new connection of @ctx to @svc; 0 when none. */
static __always_inline __u32 sock4_select(struct bpf_sock_addr *ctx, const struct lb4_key *key,
					  const struct lb4_service *svc, __u64 cookie)
{
	struct ct_tuple4 t = {};
	__u32 backend_id = 0, now = 0;
	struct lb4_affinity_key ak = {};

	if (svc->count == 0)
		return 0;
	t.saddr = sock4_client(ctx);
	t.daddr = key->address;
	t.sport = (__be16)cookie;
	t.dport = key->dport;
	t.nexthdr = key->proto;
	/* Maglev hashes the tuple: mix the cookie in so each socket can land elsewhere. */
	t.saddr ^= (__u32)(cookie >> 16);
	if (svc->flags & LB_F_AFFINITY) {
		struct lb4_affinity *a;

		ak.client = sock4_client(ctx);
		ak.rev_nat_index = svc->rev_nat_index;
		a = bpf_map_lookup_elem(&tendril_lb4_affinity, &ak);
		now = ct_now();
		if (a && now - a->last_used <= svc->affinity_timeout &&
		    bpf_map_lookup_elem(&tendril_lb4_backends, &a->backend_id))
			backend_id = a->backend_id;
	}
	if (!backend_id)
		backend_id = lb4_select_backend(key, svc, &t);
	if (backend_id && (svc->flags & LB_F_AFFINITY)) {
		struct lb4_affinity a = { .backend_id = backend_id, .last_used = now };

		bpf_map_update_elem(&tendril_lb4_affinity, &ak, &a, BPF_ANY);
	}
	return backend_id;
}

/*
 * Rewrites the destination of @ctx when it is a frontend. @sticky: reuse the
 * socket's backend for this frontend while it exists (unconnected UDP).
 * Returns SYS_PROCEED or SYS_REJECT (a frontend without backends: ECONNREFUSED).
 */
static __always_inline int sock4_xlate_fwd(struct bpf_sock_addr *ctx, bool sticky)
{
	struct lb4_key key = {};
	const struct lb4_service *svc;
	const struct lb4_backend *be = NULL;
	struct lb4_sock_key sk = {};
	struct lb4_sock_rev rev = {};
	const struct lb4_sock_rev *cur;
	struct lb4_sock_fwd fwd = {}, *f;
	__be32 addr = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;
	__u8 proto;
	__u32 backend_id = 0;
	__u64 cookie;

	if (ctx->protocol == IPPROTO_TCP)
		proto = IPPROTO_TCP;
	else if (ctx->protocol == IPPROTO_UDP)
		proto = IPPROTO_UDP;
	else
		return SYS_PROCEED;
	svc = sock4_lookup(&key, addr, port, proto);
	if (!svc)
		return SYS_PROCEED;
	/*
	 * loadBalancerSourceRanges (a LoadBalancer IP's): the client address is
	 * not known at connect() of an unbound socket, so the frontend is left to
	 * the per-packet path, which checks it (DROP_NOT_IN_SRC_RANGE) and
	 * translates (lb4_from_lxc() serves this cgroup's packets to such a
	 * frontend). As Cilium leaves to the per-packet path what socket LB
	 * cannot cover.
	 */
	if (svc->flags & LB_F_SRC_RANGE)
		return SYS_PROCEED;
	cookie = bpf_get_socket_cookie(ctx);
	sk.cookie = cookie;
	sk.address = addr;
	sk.port = port;
	if (sticky) {
		f = bpf_map_lookup_elem(&tendril_lb4_sock_fwd, &sk);
		if (f && f->rev_nat_index == svc->rev_nat_index) {
			be = bpf_map_lookup_elem(&tendril_lb4_backends, &f->backend_id);
			if (be)
				backend_id = f->backend_id;
		}
	}
	if (!be) {
		backend_id = sock4_select(ctx, &key, svc, cookie);
		be = backend_id ? bpf_map_lookup_elem(&tendril_lb4_backends, &backend_id) : NULL;
		if (!be)
			return sock4_no_service();
		if (sticky) {
			fwd.backend_id = backend_id;
			fwd.rev_nat_index = svc->rev_nat_index;
			bpf_map_update_elem(&tendril_lb4_sock_fwd, &sk, &fwd, BPF_ANY);
		}
	}
	sk.address = be->address;
	sk.port = be->port;
	rev.address = addr;
	rev.port = port;
	rev.rev_nat_index = svc->rev_nat_index;
	/* Written only when absent or different: an unconnected UDP socket comes
	 * here per datagram, and an LRU update allocates and swaps an element
	 * where the lookup only marks it used. */
	cur = bpf_map_lookup_elem(&tendril_lb4_sock_rev, &sk);
	if (!cur || cur->address != rev.address || cur->port != rev.port || cur->rev_nat_index != rev.rev_nat_index)
		bpf_map_update_elem(&tendril_lb4_sock_rev, &sk, &rev, BPF_ANY);
	ctx->user_ip4 = be->address;
	ctx->user_port = be->port;
	return SYS_PROCEED;
}

/* The frontend back in place of the backend (UDP replies, getpeername), while the service exists. */
static __always_inline void sock4_xlate_rev(struct bpf_sock_addr *ctx)
{
	struct lb4_sock_key sk = {};
	const struct lb4_sock_rev *rev;
	__u16 index;

	sk.cookie = bpf_get_socket_cookie(ctx);
	sk.address = ctx->user_ip4;
	sk.port = (__be16)ctx->user_port;
	rev = bpf_map_lookup_elem(&tendril_lb4_sock_rev, &sk);
	if (!rev)
		return;
	index = rev->rev_nat_index;
	if (!bpf_map_lookup_elem(&tendril_lb4_reverse_nat, &index)) {
		bpf_map_delete_elem(&tendril_lb4_sock_rev, &sk);
		return;
	}
	ctx->user_ip4 = rev->address;
	ctx->user_port = rev->port;
}

SEC("cgroup/connect4")
int tendril_sock4_connect(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_fwd(ctx, false);
}

SEC("cgroup/sendmsg4")
int tendril_sock4_sendmsg(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_fwd(ctx, true);
}

SEC("cgroup/recvmsg4")
int tendril_sock4_recvmsg(struct bpf_sock_addr *ctx)
{
	sock4_xlate_rev(ctx);
	return SYS_PROCEED;
}

SEC("cgroup/getpeername4")
int tendril_sock4_getpeername(struct bpf_sock_addr *ctx)
{
	sock4_xlate_rev(ctx);
	return SYS_PROCEED;
}

/*
 * Socket termination (kernel >= 6.5): iterators over the TCP and UDP sockets
 * of the network namespace that opened them destroy each socket connected to
 * a (backend, service) pair listed in tendril_lb4_sock_term: socket LB gave
 * it that backend through that service's frontend (its tendril_lb4_sock_rev
 * entry, of its cookie and that backend, names the service). A socket that
 * dialled the pod IP itself, or reached the backend through another service
 * it still belongs to, is left alone. Cilium's bpf_sock_term.c matches the
 * backend address only (its filter has no service), so there a backend that
 * leaves one of two services loses the other's sockets too. The socket's
 * owner sees ECONNABORTED at once instead of talking to a backend that is
 * gone (a connected UDP socket otherwise never learns). Each destroyed socket
 * writes one byte to the iterator's output, so the reader counts them.
 */
struct lb4_term_key {
	__be32	address;
	__be16	port;
	__u8	proto;
	__u8	pad;
	__u16	rev_nat_index;	/* the frontend the backend left */
	__u16	pad2;
};

_Static_assert(sizeof(struct lb4_term_key) == 12, "lb4_term_key must be 12 bytes");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_term_key);
	__type(value, __u8);
	__uint(max_entries, 1024);
} tendril_lb4_sock_term SEC(".maps");

/* The kernel types the iterators hand over: only the fields read here, relocated by CO-RE. */
struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

struct sock_common {
	unsigned short	skc_family;
	__be32		skc_daddr;
	__be16		skc_dport;
} __attribute__((preserve_access_index));

struct udp_sock;

struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
} __attribute__((preserve_access_index));

struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
} __attribute__((preserve_access_index));

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

#define SOCK_AF_INET	2

/*
 * Destroys @sk when socket LB connected it to a listed backend through the
 * frontend that backend left (its tendril_lb4_sock_rev entry names the
 * service): a socket that reached the same backend through another service
 * lives on. 1 when it did.
 */
static __always_inline int sock4_term(struct bpf_iter_meta *meta, struct sock_common *sk, __u8 proto)
{
	struct lb4_term_key tk = {};
	struct lb4_sock_key sk_key = {};
	const struct lb4_sock_rev *rev;

	if (!sk || sk->skc_family != SOCK_AF_INET)
		return 0;
	sk_key.cookie = bpf_get_socket_cookie(sk);
	sk_key.address = sk->skc_daddr;
	sk_key.port = sk->skc_dport;
	rev = bpf_map_lookup_elem(&tendril_lb4_sock_rev, &sk_key);
	if (!rev)
		return 0;
	tk.address = sk_key.address;
	tk.port = sk_key.port;
	tk.proto = proto;
	tk.rev_nat_index = rev->rev_nat_index;
	if (!bpf_map_lookup_elem(&tendril_lb4_sock_term, &tk))
		return 0;
	if (bpf_sock_destroy(sk))
		return 0;
	bpf_map_delete_elem(&tendril_lb4_sock_rev, &sk_key);
	bpf_seq_write(meta->seq, "x", 1);
	return 1;
}

SEC("iter/tcp")
int tendril_sock4_term_tcp(struct bpf_iter__tcp *ctx)
{
	sock4_term(ctx->meta, ctx->sk_common, IPPROTO_TCP);
	return 0;
}

SEC("iter/udp")
int tendril_sock4_term_udp(struct bpf_iter__udp *ctx)
{
	sock4_term(ctx->meta, (struct sock_common *)ctx->udp_sk, IPPROTO_UDP);
	return 0;
}

char __license[] SEC("license") = "Dual BSD/GPL";
