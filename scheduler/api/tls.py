"""TLS credentials from certificate files: server side (optionally requiring client
certificates: mutual TLS) and client side."""

from __future__ import annotations

from pathlib import Path

import grpc

from policies.errors import InputError


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot read: {exc.strerror}") from exc


def server_credentials(
    cert: Path, key: Path, client_ca: Path | None = None
) -> grpc.ServerCredentials:
    """TLS with `cert`/`key`; with `client_ca`, every client must present a certificate
    signed by it (mutual TLS)."""
    pair = (_read(key, "TLS key"), _read(cert, "TLS certificate"))
    if client_ca is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials(
        [pair], root_certificates=_read(client_ca, "client CA"), require_client_auth=True
    )


def channel_credentials(
    ca: Path | None, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    """Trust `ca` (the system roots when None); present `cert`/`key` for mutual TLS."""
    if (cert is None) != (key is None):
        raise InputError("--cert and --key go together (mutual TLS)")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca, "CA certificate") if ca else None,
        private_key=_read(key, "TLS key") if key else None,
        certificate_chain=_read(cert, "TLS certificate") if cert else None,
    )
