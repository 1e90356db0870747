/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Native routing: forward with the kernel's FIB straight to the egress device. */
#ifndef __TENDRIL_FIB_H_
#define __TENDRIL_FIB_H_

#include "common.h"
#include "drop.h"
#include "eth.h"
#include "ipv4.h"

/* <sys/socket.h> does not build for the BPF target. */
#ifndef AF_INET
#define AF_INET		2
#endif

/*
 * Route @ip towards @dst as the node would (bpf_fib_lookup from the ingress
 * device) and send it out of the chosen device ourselves, which skips the
 * second pass through the node's stack. @dst is the packet's destination, or
 * a node it is sent to as next hop unchanged (the egress gateway in native
 * routing). With a resolved neighbour the MACs come from the lookup; without
 * one bpf_redirect_neigh resolves the next hop. Anything the FIB does not
 * forward (local, unreachable, needs fragmenting, ...) goes to the stack
 * unchanged, which knows how to answer it.
 *
 * Returns TC_ACT_REDIRECT, TC_ACT_OK or a DROP_* code.
 */
static __always_inline int fib_redirect4_to(struct __sk_buff *skb, struct ethhdr *eth, struct iphdr *ip, __be32 dst)
{
	struct bpf_fib_lookup params = {};
	struct bpf_redir_neigh nh = {};
	long ret;

	if (ip->ttl <= 1)
		return DROP_TTL_EXCEEDED;

	params.family = AF_INET;
	params.ifindex = skb->ifindex;
	params.tos = ip->tos;
	params.l4_protocol = ip->protocol;
	params.tot_len = bpf_ntohs(ip->tot_len);
	params.ipv4_src = ip->saddr;
	params.ipv4_dst = dst;

	ret = bpf_fib_lookup(skb, &params, sizeof(params), 0);
	switch (ret) {
	case BPF_FIB_LKUP_RET_SUCCESS:
		/* The lookup helper did not change the packet: @eth and @ip are still valid. */
		eth_rewrite(eth, params.smac, params.dmac);
		ipv4_dec_ttl(ip);
		return bpf_redirect(params.ifindex, 0);
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		ipv4_dec_ttl(ip);
		/* params.ipv4_dst now holds the gateway (or the destination when on-link). */
		nh.nh_family = AF_INET;
		nh.ipv4_nh = params.ipv4_dst;
		return bpf_redirect_neigh(params.ifindex, &nh, sizeof(nh), 0);
	default:
		return TC_ACT_OK;
	}
}

/* fib_redirect4_to() the packet's own destination. */
static __always_inline int fib_redirect4(struct __sk_buff *skb, struct ethhdr *eth, struct iphdr *ip)
{
	return fib_redirect4_to(skb, eth, ip, ip->daddr);
}

#endif /* __TENDRIL_FIB_H_ */
