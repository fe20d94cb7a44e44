"""The gRPC policy API (package `fairpool.v1`): policy, shares, usage; with bearer-token
roles, TLS, health checking and reflection."""
