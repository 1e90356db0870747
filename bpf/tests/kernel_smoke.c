// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test object of src/kernel/bpf: constants, maps of each kind, pinning, tc/xdp programs, a verifier failure. */

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

/* Layout probe for the BTF parser test: members of mixed sizes, padding and an array. */
struct smoke_value {
	__u32 a;
	__u16 b;
	__u8 mac[6];
	__u64 counter;
	__u32 flags;
	/* 4 bytes of padding before counter and 4 of tail padding: sizeof == 32 */
};

/* Load-time constants (.rodata). The loader sets them by name; the verifier sees their values. */
volatile const __u32 SMOKE_RET = 0;
volatile const __u32 SMOKE_MARK = 0;
volatile const __u64 SMOKE_U64 = 0;
volatile const __u8 SMOKE_MAC[6] = {};
/* Non-zero makes smoke_tc dereference a possibly-NULL pointer, which the verifier rejects. */
volatile const __u8 SMOKE_BAD = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, struct smoke_value);
} smoke_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} smoke_array SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} smoke_percpu SEC(".maps");

/* Pinned by name under LoadOptions.pinRoot, so a second load re-uses it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} smoke_pinned SEC(".maps");

/*
 * Returns SMOKE_RET, or smoke_pinned[1] when that key exists; sets skb->mark
 * to SMOKE_MARK and counts runs in smoke_array[0] and smoke_percpu[0].
 */
SEC("tc")
int smoke_tc(struct __sk_buff *skb)
{
	__u32 key = 0, one = 1;
	__u64 *runs;
	__u32 *pinned, *cpu_runs;

	runs = bpf_map_lookup_elem(&smoke_array, &key);
	if (SMOKE_BAD) {
		/* Deliberately no NULL check: only verified when SMOKE_BAD != 0. */
		return *(__u32 *)bpf_map_lookup_elem(&smoke_pinned, &one);
	}
	if (runs)
		__sync_fetch_and_add(runs, 1);
	cpu_runs = bpf_map_lookup_elem(&smoke_percpu, &key);
	if (cpu_runs)
		*cpu_runs += 1;
	skb->mark = SMOKE_MARK;
	pinned = bpf_map_lookup_elem(&smoke_pinned, &one);
	if (pinned)
		return *pinned;
	return SMOKE_RET;
}

/* A second tc program, so Link.update() has something to switch to. */
SEC("tc")
int smoke_tc_alt(struct __sk_buff *skb)
{
	return TC_ACT_SHOT;
}

/* Reached by its section name: program("xdp"). */
SEC("xdp")
int smoke_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
