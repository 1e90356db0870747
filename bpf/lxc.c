// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Endpoint programs: one loaded instance serves every pod of the node. */

#include "lib/common.h"
#include "lib/config.h"
#include "lib/drop.h"
#include "lib/maps.h"
#include "lib/endpoint.h"
#include "lib/eth.h"
#include "lib/ipv4.h"
#include "lib/arp.h"
#include "lib/identity.h"
#include "lib/ipcache.h"
#include "lib/encap.h"
#include "lib/fib.h"
#include "lib/local_delivery.h"

/*
 * IPv4 leaving the pod @src. Returns a TC verdict or a DROP_* code.
 */
static __always_inline int handle_ipv4_from_lxc(struct __sk_buff *skb,
						const struct endpoint_info *src)
{
	const struct remote_endpoint_info *info;
	const struct endpoint_info *dst;
	__be32 tunnel_endpoint;
	struct ethhdr *eth;
	struct iphdr *ip;
	int ret;

	ret = ipv4_load(skb, &eth, &ip);
	if (IS_ERR(ret))
		return ret;

	/* Anti-spoofing: a pod may only send from its own address. */
	if (ip->saddr != src->ip4)
		return DROP_INVALID_SIP;

	dst = lookup_ip4_endpoint(ip->daddr);
	if (dst) {
		if (ep_is_host(dst))
			return TC_ACT_OK;
		return ipv4_local_delivery(eth, ip, dst);
	}

	/*
	 * Off-node: the ipcache knows pods and nodes of the cluster. A miss is
	 * the world, and the node's stack routes it (masquerade comes later).
	 */
	info = ipcache_lookup4(ip->daddr);
	if (!info || info->sec_identity == IDENTITY_HOST)
		return TC_ACT_OK;

	tunnel_endpoint = ipcache_tunnel_endpoint(info);
	if (tunnel_endpoint)
		return encap_and_redirect(skb, tunnel_endpoint, src->sec_id);
	if (!tunnel_mode())
		return fib_redirect4(skb, eth, ip);

	/* Tunnel mode without a tunnel endpoint (e.g. a node's underlay IP): the stack routes it. */
	return TC_ACT_OK;
}

/*
 * Ingress of the pod's host-side veth, i.e. packets leaving the pod. The
 * source endpoint is found by the veth's ifindex, so one program instance
 * serves every pod.
 */
static __always_inline int from_container(struct __sk_buff *skb)
{
	const struct endpoint_info *src;
	int ret;

	src = lookup_ep_by_ifindex(skb->ifindex);
	/* Attached before the agent filled the maps, or a stale attachment. */
	if (!src)
		return send_drop_notify(skb, DROP_EP_NOT_READY);
	set_src_identity(skb, src->sec_id);

	switch (skb->protocol) {
	case bpf_htons(ETH_P_IP):
		ret = handle_ipv4_from_lxc(skb, src);
		break;
	case bpf_htons(ETH_P_ARP):
		ret = arp_respond(skb, src->node_mac, src->ip4);
		break;
	default:
		/* IPv6 and anything else: not supported yet, keep it off the node. */
		ret = DROP_UNKNOWN_L3;
		break;
	}

	if (IS_ERR(ret))
		return send_drop_notify(skb, ret);
	return ret;
}

SEC("tc")
int cil_from_container(struct __sk_buff *skb)
{
	return from_container(skb);
}

/*
 * Egress of the pod's host-side veth: packets the node's stack sends to the
 * pod. The pod's ingress policy will be enforced here; until policy exists
 * everything passes.
 */
SEC("tc")
int cil_to_container(struct __sk_buff *skb)
{
	(void)skb;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
