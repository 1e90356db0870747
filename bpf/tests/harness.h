/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Test-harness helpers: make the tunnel key of a test run visible to userspace through skb->cb. */
#ifndef __TENDRIL_TEST_HARNESS_H_
#define __TENDRIL_TEST_HARNESS_H_

#include "../lib/common.h"

/* Debian's uapi header may predate it (Linux 6.2). */
#ifndef BPF_F_TUNINFO_FLAGS
#define BPF_F_TUNINFO_FLAGS	(1ULL << 4)
#endif

/* Marks cb[1] when no tunnel key is attached. */
#define HARNESS_NO_KEY	0xffffffff

/*
 * BPF_PROG_TEST_RUN cannot return an skb's tunnel metadata, so the harness
 * reads it back and writes it into cb, which the test run does return:
 * cb[1] = VNI, cb[2] = remote IPv4 (host order), cb[3] = TTL, cb[4] = tunnel
 * flags (network order, TUNNEL_CSUM = 0x0001 when the outer UDP checksum is
 * on). A key set for sending reads back with remote and local swapped, hence
 * local_ipv4.
 */
static __always_inline void harness_store_tunnel_key(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {};

	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), BPF_F_TUNINFO_FLAGS) < 0) {
		skb->cb[1] = HARNESS_NO_KEY;
		return;
	}
	skb->cb[1] = key.tunnel_id;
	skb->cb[2] = key.local_ipv4;
	skb->cb[3] = key.tunnel_ttl;
	skb->cb[4] = bpf_ntohs(key.tunnel_flags);
}

/*
 * Attach a received-packet tunnel key as the VXLAN device would: VNI from
 * cb[1], sender underlay IPv4 (host order) from cb[2]. Written as a send key
 * whose local address is what a receiver reads back as remote.
 */
static __always_inline int harness_attach_rx_key(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {};

	key.tunnel_id = skb->cb[1];
	key.local_ipv4 = skb->cb[2];
	key.tunnel_ttl = 64;
	return bpf_skb_set_tunnel_key(skb, &key, sizeof(key), 0);
}

#endif /* __TENDRIL_TEST_HARNESS_H_ */
