// Trivial XDP_PASS program for the router-side veth peers of LB nodes (XDP_TX on veth needs one on the peer).
#include <linux/bpf.h>

__attribute__((section("xdp"), used)) int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] __attribute__((section("license"), used)) = "GPL";
