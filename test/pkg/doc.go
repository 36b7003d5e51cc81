// Package pkg tests the Debian package `make deb` builds: its contents and
// metadata, its installation with dpkg on the test machine, the installed
// binary (version, check-config on the shipped conffile, a session through
// it in the lab), the shipped systemd unit (systemd-analyze verify and
// security), and its purge. Privileged: it needs root and changes the
// machine's package database for the duration of the test.
package pkg
