package route

import "log/slog"

// Option configures New.
type Option func(*options)

type options struct {
	netns  int
	logger *slog.Logger
}

// WithNetNS makes the Router work in the network namespace the file
// descriptor refers to (an open /run/netns/NAME or /proc/PID/ns/net), as
// nft.WithNetNS does for the table. The caller keeps the descriptor open.
func WithNetNS(fd int) Option {
	return func(o *options) { o.netns = fd }
}

// WithLogger sets the logger; nil (the default) discards logs.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

func buildOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	return o
}
