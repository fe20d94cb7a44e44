"""TLS credentials from certificate files: server side (optionally requiring client
certificates: mutual TLS) and client side; a server listening with them."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from policies.errors import GRPC_BIND_FAILED, InputError, ListenError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
    from cryptography.x509 import Certificate


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot read: {exc.strerror}") from exc


# gRPC reads these files only when it binds or connects, and then fails as "cannot
# listen on ADDRESS" (server) or UNAVAILABLE "failed to create security handshaker"
# (client), with C-core log lines: each is parsed here first, so the message names it.


def _certificates(path: Path, what: str) -> tuple[bytes, list[Certificate]]:
    from cryptography import x509  # 40 ms: only for TLS, not every CLI call

    data = _read(path, what)
    try:
        found = x509.load_pem_x509_certificates(data)
    except ValueError:
        found = []
    if not found:
        raise InputError(f"{what} {path}: not a PEM certificate")
    return data, found


def _private_key(path: Path, what: str) -> tuple[bytes, PrivateKeyTypes]:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    data = _read(path, what)
    try:
        return data, serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # a password-protected key
        raise InputError(f"{what} {path}: encrypted; gRPC needs an unencrypted key") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InputError(f"{what} {path}: not a PEM private key") from exc


def _key_pair(cert: Path, key: Path) -> tuple[bytes, bytes]:
    """(key, certificate chain) as gRPC takes them, once both parse and the key is the
    certificate's."""
    from cryptography.hazmat.primitives import serialization

    chain, certificates = _certificates(cert, "TLS certificate")
    secret, private = _private_key(key, "TLS key")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if certificates[0].public_key().public_bytes(*spki) != private.public_key().public_bytes(*spki):
        raise InputError(f"TLS key {key}: not the key of TLS certificate {cert}")
    return secret, chain


def server_credentials(
    cert: Path, key: Path, client_ca: Path | None = None
) -> grpc.ServerCredentials:
    """TLS with `cert`/`key`; with `client_ca`, every client must present a certificate
    signed by it (mutual TLS)."""
    pair = _key_pair(cert, key)
    if client_ca is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials(
        [pair], root_certificates=_certificates(client_ca, "client CA")[0], require_client_auth=True
    )


def listen(
    server: grpc.Server,
    address: str,
    cert: Path | None,
    key: Path | None,
    client_ca: Path | None,
) -> int:
    """Have `server` listen on `address`, with TLS when `cert` and `key` are given; the
    port bound. An address it cannot bind is a ListenError naming it."""
    try:
        if cert is not None and key is not None:
            port = server.add_secure_port(address, server_credentials(cert, key, client_ca))
        else:
            port = server.add_insecure_port(address)
    except RuntimeError:  # newer grpcio raises where older ones returned 0
        port = 0
    if port == 0:
        raise ListenError(address, GRPC_BIND_FAILED)
    return int(port)


def channel_credentials(
    ca: Path | None, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    """Trust `ca` (the system roots when None); present `cert`/`key` for mutual TLS."""
    if (cert is None) != (key is None):
        raise InputError("--cert and --key go together (mutual TLS)")
    secret, chain = _key_pair(cert, key) if cert is not None and key is not None else (None, None)
    return grpc.ssl_channel_credentials(
        root_certificates=_certificates(ca, "CA certificate")[0] if ca else None,
        private_key=secret,
        certificate_chain=chain,
    )


def address_host(address: str) -> str:
    """The host part of a gRPC `host:port` address (`[v6]:port` too)."""
    if address.startswith("["):
        return address[1:].partition("]")[0]
    host, sep, _port = address.rpartition(":")
    return host if sep else address


def is_loopback(address: str) -> bool:
    """True when `address` (host:port, or a unix socket) only reaches this machine."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host = address_host(address.removeprefix("dns:///").removeprefix("ipv4:").removeprefix("ipv6:"))
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
