// Package load is the load generator of `make bench`: it runs many FTP
// sessions at once for a bounded time and reports what they cost the
// daemon in the middle.
//
// The package itself is pure and small: Run drives a session function from
// N workers for a measurement window and collects completions, failures
// and latencies (Result, Percentile); ReadProc and ReadSmapsRollup read a
// process's resident memory and CPU time from /proc; Chart draws a line
// chart as a standalone SVG document with the standard library only, so
// that the figures in docs/ are made by the benchmark from its own data.
//
// The benchmarks of this package (load_bench_test.go, root only) put it to
// work in the lab: full FTPS sessions through mitm mode and plaintext
// sessions through inspect mode at rising concurrency, and up to 10,000
// idle mitm sessions held open while the daemon's memory is read. They
// are not part of the timed CI: `make test` runs only the unit tests and a
// ten-session functional test; `make bench` runs the benchmarks.
package load
