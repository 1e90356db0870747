/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Incremental Internet checksum updates (RFC 1624). */
#ifndef __TENDRIL_CSUM_H_
#define __TENDRIL_CSUM_H_

#include "common.h"

static __always_inline __u16 csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/*
 * New checksum after one 16-bit word of the covered data changed from @old to
 * @new: HC' = ~(~HC + ~m + m'). Works on network-order values unchanged
 * because one's complement addition is byte-order independent.
 */
static __always_inline __sum16 csum_replace2(__sum16 check, __be16 old, __be16 new)
{
	__u32 sum = (__u16)~check;

	sum += (__u16)~old;
	sum += new;
	return (__sum16)~csum_fold32(sum);
}

#endif /* __TENDRIL_CSUM_H_ */
