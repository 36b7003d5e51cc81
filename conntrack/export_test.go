package conntrack

// IdleSockets is the number of sockets l keeps for its next look-ups.
func IdleSockets(l *Lookup) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.idle)
}
