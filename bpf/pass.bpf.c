/* Trivial XDP program: counts packets and returns a load-time verdict (XDP_PASS by default). For veth
 * peers (XDP_TX needs a program there), as the benchmark floor, and as the bench's counting sink. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

const volatile __u32 verdict = XDP_PASS;

/* [0] = packets seen, per CPU. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
} pass_stats SEC(".maps");

SEC("xdp")
int xdp_pass(struct xdp_md *ctx) {
  __u32 zero = 0;
  __u64 *c = bpf_map_lookup_elem(&pass_stats, &zero);
  if (c) *c += 1;
  return verdict;
}

char LICENSE[] SEC("license") = "GPL";
