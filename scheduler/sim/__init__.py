"""The simulator: a trace replayed on a simulated cluster by the same engine the daemon
runs, with standalone replays per member, the DESIGN.md metrics and the output files."""
