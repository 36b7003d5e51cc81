// Package conntrack follows the kernel's connection tracking table over
// ctnetlink so that ftpsalg learns when a control connection is gone (its
// conntrack entry is destroyed) even if the daemon never saw its FIN or RST.
//
// It decodes events with github.com/ti-mo/conntrack on
// github.com/mdlayher/netlink pinned at v1.9.0: later netlink releases hang
// conntrack Get (see shared NETFILTER-NOTES §3). ReplyDestination (the
// masquerade look-up, lookup.go) is the one Get, bounded by its context.
//
// A gateway forwards many more connections than FTP control connections,
// and each would cost the daemon two events to decode (NEW and DESTROY,
// about 50 µs of its CPU per connection on the CI machine). Listener.Ports
// attaches a classic BPF socket filter (filter.go) that passes only the
// events of TCP connections to the packet path's control ports, reading
// the original tuple at the fixed offsets the kernel writes it at; an event
// it cannot place passes, so the filter saves work and never loses an
// event.
//
// DESTROY events for flows that merely time out arrive when the kernel's
// garbage collector reaps the entry, which can be a minute after expiry: they
// are a clean-up signal, never a clock.
package conntrack
