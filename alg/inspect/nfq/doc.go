// Package nfq reads one NFQUEUE over NETLINK_NETFILTER and sends its
// verdicts, with golang.org/x/sys/unix only: several packets per receive
// system call (recvmmsg), all verdicts of what one read returned in one
// send, attributes decoded in place into reused buffers, so the steady
// state allocates nothing per packet. The wire format is that of
// <linux/netfilter/nfnetlink_queue.h>; see README.md for the design.
package nfq
