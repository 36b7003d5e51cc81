// Package metrics holds ftpsalg's Prometheus metrics and its HTTP endpoints
// (/metrics, /healthz, /readyz).
//
// The registry is built in main and passed in: there is no global state.
// Metric names follow ftpsalg_<subsystem>_<what>_<unit> and are declared as
// constants that tests reuse. Labels come from bounded sets only (mode, verb,
// reason, verdict, queue number): never client addresses, users or paths.
package metrics
