package route

import "log/slog"

// Options are New's optional settings; the zero value works in the
// calling process's network namespace and discards logs.
type Options struct {
	// NetNS is a file descriptor of the network namespace to work in (an
	// open /run/netns/NAME or /proc/PID/ns/net), as for nft.WithNetNS; 0
	// is the caller's. The caller keeps it open.
	NetNS int
	// Logger receives debug logs; nil discards them.
	Logger *slog.Logger
}
