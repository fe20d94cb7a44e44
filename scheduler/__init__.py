"""The fairpool scheduler: a pure fair-share engine and the shells around it
(simulator, Kubernetes adapter, gRPC server, CLI)."""

from scheduler.engine_build import choose

# Before anything imports the engine: compiled, or its sources (see engine_build).
ENGINE_BUILD = choose()
