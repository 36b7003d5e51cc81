// Package status is the daemon's local admin endpoint: a snapshot of live
// control sessions and pending pinholes, served as JSON over a root-only
// Unix socket and read by `ftpsalg status`.
//
// The package knows nothing of the packet or stream paths: the daemon
// passes a source function that builds a Snapshot from them, so the
// endpoint stays the same whatever keeps the sessions.
package status
