"""The fairpool scheduler: a pure fair-share engine and the shells around it
(simulator, Kubernetes adapter, gRPC server, CLI)."""
