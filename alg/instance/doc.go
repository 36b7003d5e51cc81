// Package instance makes sure that one ftpsalg runs per network namespace
// and table.
//
// Two daemons for the same table would fight over it: the second rebuilds
// the table under the first, cannot bind the queue (nfnetlink_queue says
// "operation not permitted", which points nowhere) and deletes the table on
// its way out, taking it from the first. Acquire binds an abstract Unix
// socket named after the table ("@ftpsalg/<table>"). Abstract names belong
// to the network namespace, like the table, and need no file: the kernel
// frees the name when the last descriptor closes, so a crashed or killed
// daemon never leaves a stale lock, and there is nothing to clean up or to
// get wrong with permissions. The socket is a listener only so that
// `ss -xlp` shows it with the owning process; nothing ever connects to it.
package instance
