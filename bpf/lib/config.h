/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-node load-time constants: set in .rodata by the loader before load. */
#ifndef __TENDRIL_CONFIG_H_
#define __TENDRIL_CONFIG_H_

#include "common.h"

/*
 * Objects are compiled once and configured at load (DESIGN.md "Compile once,
 * configure at load"). `volatile` keeps clang from folding the zero default
 * into the code; the loader rewrites .rodata and the verifier then sees the
 * real value as a constant. Names are the loader's contract: do not rename.
 */

/* Router IP held by tendril_host (the pods' default gateway), network order. */
volatile const __be32 CONFIG_ROUTER_IP4 = 0;
/* ifindex of tendril_host. */
volatile const __u32 CONFIG_HOST_IFINDEX = 0;
/* The node's own (underlay) IPv4 address, network order. */
volatile const __be32 CONFIG_NODE_IP4 = 0;
/* MAC of tendril_host: traffic handed to the node's stack is addressed to it. */
volatile const __u8 CONFIG_HOST_MAC[6] = {};

#define ROUTING_MODE_TUNNEL	0
#define ROUTING_MODE_NATIVE	1
/* How traffic reaches pods of other nodes: ROUTING_MODE_*. */
volatile const __u32 CONFIG_ROUTING_MODE = ROUTING_MODE_TUNNEL;
/* ifindex of tendril_vxlan (tunnel mode), 0 otherwise. */
volatile const __u32 CONFIG_TUNNEL_IFINDEX = 0;
/* ifindex of the native (underlay) device. */
volatile const __u32 CONFIG_NATIVE_IFINDEX = 0;

/*
 * Datapath events (trace, drop, policy verdict) on (1, the default) or off
 * (0): off, the verifier removes every event path from the programs.
 */
volatile const __u32 CONFIG_EVENTS = 1;

/*
 * Conntrack timeouts in seconds (Cilium's defaults): established TCP, TCP
 * before a non-SYN packet was seen, TCP closing (FIN both ways or RST), and
 * everything that is not TCP.
 */
volatile const __u32 CONFIG_CT_TIMEOUT_TCP = 8000;
volatile const __u32 CONFIG_CT_TIMEOUT_TCP_SYN = 60;
volatile const __u32 CONFIG_CT_TIMEOUT_TCP_FIN = 10;
volatile const __u32 CONFIG_CT_TIMEOUT_ANY = 60;

/*
 * Masquerading (lib/nat.h): BPF SNAT of pod traffic leaving the native
 * device to the world, on (1) or off (0); the port range of the translated
 * flows (host order, inclusive); the native-routing CIDR that is never
 * masqueraded (address and mask, network order; mask 0 = none); and whether
 * the ip-masq-agent's non-masquerade set (tendril_ipmasq) is consulted.
 */
volatile const __u32 CONFIG_MASQ = 0;
volatile const __u32 CONFIG_NAT_PORT_MIN = 32768;
volatile const __u32 CONFIG_NAT_PORT_MAX = 60999;
volatile const __be32 CONFIG_NATIVE_ROUTING_NET4 = 0;
volatile const __be32 CONFIG_NATIVE_ROUTING_MASK4 = 0;
volatile const __u32 CONFIG_IPMASQ = 0;

/*
 * The cgroup v2 socket-level LB is attached to (bpf/sock.c), by id and level
 * (0: none). A packet whose socket lives in it or below was given its backend
 * at connect()/sendmsg(), so lib/lb.h skips the per-packet service lookup for
 * it; packets without such a socket (another cgroup, raw sockets, the kernel's
 * own replies) keep the per-packet path.
 */
volatile const __u64 CONFIG_SOCK_LB_CGROUP_ID = 0;
volatile const __u32 CONFIG_SOCK_LB_CGROUP_LEVEL = 0;

static __always_inline bool tunnel_mode(void)
{
	return CONFIG_ROUTING_MODE == ROUTING_MODE_TUNNEL;
}

#endif /* __TENDRIL_CONFIG_H_ */
