/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Base includes and packet-access helpers shared by every datapath object. */
#ifndef __TENDRIL_COMMON_H_
#define __TENDRIL_COMMON_H_

#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#define likely(x)	__builtin_expect(!!(x), 1)
#define unlikely(x)	__builtin_expect(!!(x), 0)

/*
 * Make the first @len bytes of the packet directly accessible and return the
 * data/data_end pointers. Headers are almost always linear already; the pull
 * only happens for the rare skb whose headers sit in fragments. Any helper
 * that changes the packet invalidates earlier pointers, so callers reload
 * through this function instead of caching them.
 */
static __always_inline bool ctx_pull(struct __sk_buff *skb, __u32 len,
				     void **data, void **data_end)
{
	*data = (void *)(long)skb->data;
	*data_end = (void *)(long)skb->data_end;
	if (likely(*data + len <= *data_end))
		return true;

	if (bpf_skb_pull_data(skb, len) < 0)
		return false;
	*data = (void *)(long)skb->data;
	*data_end = (void *)(long)skb->data_end;
	return *data + len <= *data_end;
}

#endif /* __TENDRIL_COMMON_H_ */
