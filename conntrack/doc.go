// Package conntrack follows the kernel's connection tracking table over
// ctnetlink so that ftpsalg learns when a control connection is gone (its
// conntrack entry is destroyed) even if the daemon never saw its FIN or RST.
//
// It uses github.com/ti-mo/conntrack on github.com/mdlayher/netlink pinned
// at v1.9.0: later netlink releases hang conntrack Get (see
// shared NETFILTER-NOTES §3). This package never calls Get.
//
// DESTROY events for flows that merely time out arrive when the kernel's
// garbage collector reaps the entry, which can be a minute after expiry: they
// are a clean-up signal, never a clock.
package conntrack
