// Package integration runs ftpsalg end to end in network namespaces: the
// real kernel (nftables, NFQUEUE, conntrack), real vsftpd, curl and lftp,
// the lab's hostile FTP server, and the ftpsalg binary built with the race
// detector, between a client and a server under a default-drop firewall.
// The tests need root; see test/lab.
package integration
