// Package inspect is ftpsalg's packet path (inspect mode): control-connection
// packets reach it through NFQUEUE; it follows each flow's TCP sequence
// space, feeds the FTP core only bytes that are new and in order, commits
// the pinholes the core decides before releasing the packet that announced
// them, and neutralises refused lines with same-length edits (checksums
// fixed). See README.md for the design and its limits.
package inspect
