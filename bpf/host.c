// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* tendril_host programs: the node's stack handing traffic to local pods. */

#include "lib/common.h"
#include "lib/config.h"
#include "lib/drop.h"
#include "lib/maps.h"
#include "lib/endpoint.h"
#include "lib/eth.h"
#include "lib/ipv4.h"

/*
 * Egress of tendril_host. The node routes `<podCIDR> via <router> dev
 * tendril_host`, so pod-bound traffic from the node (and forwarded by it)
 * leaves here. The stack has already done the routing hop (TTL), so this only
 * fixes L2 for the pod and sends the packet out of its veth, which puts it
 * into the pod. Everything else, including ARP, continues normally.
 */
SEC("tc")
int cil_from_host(struct __sk_buff *skb)
{
	const struct endpoint_info *ep;
	struct ethhdr *eth;
	struct iphdr *ip;
	int ret;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;

	ret = ipv4_load(skb, &eth, &ip);
	if (IS_ERR(ret))
		return send_drop_notify(skb, ret);

	ep = lookup_ip4_endpoint(ip->daddr);
	if (!ep || ep_is_host(ep))
		return TC_ACT_OK;

	eth_rewrite(eth, ep->node_mac, ep->mac);
	return bpf_redirect(ep->ifindex, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
