// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* tendril_host and native-device programs: the node's stack and the underlay handing traffic to pods. */

#include "lib/common.h"
#include "lib/config.h"
#include "lib/drop.h"
#include "lib/maps.h"
#include "lib/endpoint.h"
#include "lib/eth.h"
#include "lib/ipv4.h"
#include "lib/identity.h"
#include "lib/ipcache.h"
#include "lib/encap.h"
#include "lib/local_delivery.h"

/*
 * Egress of tendril_host. The node routes its own pod CIDR and, in tunnel
 * mode, every remote pod CIDR `dev tendril_host`, so pod-bound traffic of the
 * node (and forwarded by it) leaves here. The stack has already done the
 * routing hop (TTL). A local pod gets the packet out of its veth with its
 * MACs; a remote one gets it through the tunnel, sent as remote-node
 * identity as Cilium does for host traffic. Everything else, including ARP,
 * continues normally.
 */
static __always_inline int from_host(struct __sk_buff *skb)
{
	const struct endpoint_info *ep;
	__be32 tunnel_endpoint;
	struct ethhdr *eth;
	struct iphdr *ip;
	int ret;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;

	ret = ipv4_load(skb, &eth, &ip);
	if (IS_ERR(ret))
		return send_drop_notify(skb, ret);

	ep = lookup_ip4_endpoint(ip->daddr);
	if (ep) {
		if (ep_is_host(ep))
			return TC_ACT_OK;
		eth_rewrite(eth, ep->node_mac, ep->mac);
		return bpf_redirect(ep->ifindex, 0);
	}

	tunnel_endpoint = ipcache_tunnel_endpoint(ipcache_lookup4(ip->daddr));
	if (tunnel_endpoint) {
		ret = encap_and_redirect(skb, tunnel_endpoint, IDENTITY_REMOTE_NODE);
		if (IS_ERR(ret))
			return send_drop_notify(skb, ret);
		return ret;
	}
	return TC_ACT_OK;
}

SEC("tc")
int cil_from_host(struct __sk_buff *skb)
{
	return from_host(skb);
}

/*
 * Ingress of the native device (native routing mode): pod traffic of other
 * nodes arrives unencapsulated, routed here by their `podCIDR via nodeIP`
 * routes. Packets for a local pod go straight into it; the source identity
 * comes from the ipcache, as nothing on the wire carries it. Everything else
 * is the node's own traffic and goes to its stack.
 */
static __always_inline int from_netdev(struct __sk_buff *skb)
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

	set_src_identity(skb, ipcache_identity4(ip->saddr));
	ret = ipv4_local_delivery(eth, ip, ep);
	if (IS_ERR(ret))
		return send_drop_notify(skb, ret);
	return ret;
}

SEC("tc")
int cil_from_netdev(struct __sk_buff *skb)
{
	return from_netdev(skb);
}

/* Egress of the native device: the hook for BPF masquerade; passes everything for now. */
SEC("tc")
int cil_to_netdev(struct __sk_buff *skb)
{
	(void)skb;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
