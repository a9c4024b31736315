/* Benchmark traffic generator for BPF_PROG_RUN live frames: rewrites each frame from a template (pages are
 * recycled without reset), varies the UDP source port over `flows` flows, and transmits it (XDP_TX). */
#include "shared.h"
#include "parse.h"

#define GEN_MAX_LEN 128

const volatile __u8 tmpl[GEN_MAX_LEN] = {};  /* the frame: Ethernet + IPv4/IPv6 + UDP */
const volatile __u32 tmpl_len = 0;           /* bytes of tmpl used (= the frame length given to the run) */
const volatile __u32 sport_off = 0;          /* offset of the UDP source port in the frame */
const volatile __u32 flows = 1;              /* distinct flows cycled: source port, then source address */
const volatile __u32 saddr_off = 0;          /* offset of the IPv4 source address's low 16 bits; 0 = fixed */

/* [0] = frames generated, per CPU (also the per-CPU flow cursor). */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
} gen_stats SEC(".maps");

SEC("xdp")
int bench_gen(struct xdp_md *ctx) {
  void *data = (void *)(long)ctx->data;
  void *data_end = (void *)(long)ctx->data_end;
  __u8 *d = data;
  if (data + GEN_MAX_LEN > data_end && data + tmpl_len > data_end) return XDP_DROP;
  /* byte by byte: a memcpy of a const volatile array was folded to zeros */
#pragma unroll
  for (int i = 0; i < GEN_MAX_LEN; i++) {
    if (i >= tmpl_len) break;
    if ((void *)(d + i + 1) > data_end) break;
    d[i] = tmpl[i];
  }
  __u32 zero = 0;
  __u64 *n = bpf_map_lookup_elem(&gen_stats, &zero);
  if (!n) return XDP_DROP;
  __u32 flow = (__u32)(*n % (flows ? flows : 1));
  *n += 1;
  __be16 *sp = data + (sport_off & 0x7f);
  if ((void *)(sp + 1) > data_end) return XDP_DROP;
  *sp = bpf_htons(1024 + (flow & 0x7fff));
  if (saddr_off) {
    /* more than 32768 flows: the rest of the flow number goes into the source address (its header checksum
     * is left as the template's: the balancer does not check it, the sink drops the frame) */
    __be16 *sa = data + (saddr_off & 0x7f);
    if ((void *)(sa + 1) > data_end) return XDP_DROP;
    *sa = bpf_htons(flow >> 15);
  }
  return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
