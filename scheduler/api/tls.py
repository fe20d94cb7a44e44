"""TLS credentials from certificate files: server side (optionally requiring client
certificates: mutual TLS) and client side; a server listening with them."""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from policies.errors import GRPC_BIND_FAILED, InputError, ListenError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
    from cryptography.x509 import Certificate

_log = logging.getLogger(__name__)


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


class _CertificateFiles:
    """The server's certificate files, read again when they change. cert-manager renews
    the certificate in its Secret and the kubelet swaps the mounted files: a server that
    kept the certificate it started with served it until it expired, and every client
    was then refused."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self._cert, self._key, self._client_ca = cert, key, client_ca
        self._lock = threading.Lock()
        self._stamp = self._stamps()
        self.initial = self._configuration()
        self._refused: tuple[tuple[int, int, int], ...] | None = None

    def _paths(self) -> list[Path]:
        return [p for p in (self._cert, self._key, self._client_ca) if p is not None]

    def _stamps(self) -> tuple[tuple[int, int, int], ...] | None:
        try:
            found = [os.stat(p) for p in self._paths()]  # follows the kubelet's symlinks
        except OSError:
            return None
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in found)

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        pair = _key_pair(self._cert, self._key)
        ca = None if self._client_ca is None else _certificates(self._client_ca, "client CA")[0]
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC asks at each handshake: the new files once they changed and parse, else
        None (what is served stays). A half-written pair is tried again next time."""
        stamp = self._stamps()
        with self._lock:
            if stamp is None or stamp == self._stamp:
                return None
            try:
                configuration = self._configuration()
            except InputError as exc:
                if stamp != self._refused:
                    _log.warning(
                        "TLS files changed but cannot be used, still serving the "
                        "previous certificate: %s",
                        exc,
                    )
                    self._refused = stamp
                return None
            self._stamp = stamp
            _log.info("TLS certificate %s changed: serving the new one", self._cert)
            return configuration


def server_credentials(
    cert: Path, key: Path, client_ca: Path | None = None
) -> grpc.ServerCredentials:
    """TLS with `cert`/`key`, read again when they change; with `client_ca`, every client
    must present a certificate signed by it (mutual TLS)."""
    files = _CertificateFiles(cert, key, client_ca)
    return grpc.dynamic_ssl_server_credentials(
        files.initial, files.fetch, require_client_authentication=client_ca is not None
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
