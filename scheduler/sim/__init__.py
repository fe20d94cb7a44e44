"""The simulator: a trace replayed on a simulated cluster by the same engine the daemon
runs, with standalone replays per member, the metrics of docs/metrics.md and the output files."""
