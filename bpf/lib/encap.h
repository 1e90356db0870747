/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Tunnel mode: hand a packet to the collect-metadata VXLAN device with its tunnel key. */
#ifndef __TENDRIL_ENCAP_H_
#define __TENDRIL_ENCAP_H_

#include "common.h"
#include "config.h"
#include "drop.h"

#define TUNNEL_TTL	64

/*
 * Set the tunnel key and redirect to the egress of tendril_vxlan; the kernel
 * builds the outer Ethernet/IPv4/UDP/VXLAN headers from the key and the
 * device (UDP 8472). The VNI carries the source security identity so the
 * receiving node knows it without an ipcache lookup (as Cilium). The outer
 * UDP checksum stays zero: the inner packet has its own checksums and the
 * receiver does not need one (RFC 7348).
 */
static __always_inline int encap_and_redirect(struct __sk_buff *skb, __be32 tunnel_endpoint,
					      __u32 src_identity)
{
	struct bpf_tunnel_key key = {};

	key.remote_ipv4 = bpf_ntohl(tunnel_endpoint);
	key.tunnel_id = src_identity;
	key.tunnel_ttl = TUNNEL_TTL;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX) < 0)
		return DROP_WRITE_ERROR;
	return bpf_redirect(CONFIG_TUNNEL_IFINDEX, 0);
}

#endif /* __TENDRIL_ENCAP_H_ */
