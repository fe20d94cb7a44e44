"""TLS and mutual TLS on loopback with certificates made in the test; token files."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from policies.errors import InputError
from proto.fairpool.v1 import policy_pb2, policy_pb2_grpc
from scheduler.api.auth import RoleKind, TokenTable, parse_tokens
from scheduler.api.tls import channel_credentials
from tests.unit.test_api_support import metadata, running_server


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(
    folder: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Pair:
    pair = Pair(folder / f"{stem}.crt", folder / f"{stem}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pair


def make_ca(folder: Path, stem: str) -> tuple[Pair, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(stem))
        .issuer_name(_name(stem))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return _write(folder, stem, cert, key), cert, key


def issue(
    folder: Path,
    stem: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    server: bool,
) -> Pair:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(stem))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return _write(folder, stem, builder.sign(ca_key, hashes.SHA256()), key)


@dataclass(frozen=True)
class Pki:
    ca: Pair
    server: Pair
    client: Pair
    stranger: Pair
    """A client certificate from another CA."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, ca_cert, ca_key = make_ca(folder, "fairpool-ca")
    _, other_cert, other_key = make_ca(folder, "other-ca")
    return Pki(
        ca=ca,
        server=issue(folder, "server", (ca_cert, ca_key), server=True),
        client=issue(folder, "client", (ca_cert, ca_key), server=False),
        stranger=issue(folder, "stranger", (other_cert, other_key), server=False),
    )


def _get_policy(channel: grpc.Channel) -> grpc.StatusCode:
    try:
        policy_pb2_grpc.PolicyServiceStub(channel).GetPolicy(
            policy_pb2.GetPolicyRequest(), metadata=metadata("viewer"), timeout=5
        )
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.fixture
def tls_server(tmp_path: Path, pki: Pki) -> Iterator[int]:
    creds = channel_credentials(pki.ca.cert)
    with running_server(tmp_path, creds, tls_cert=pki.server.cert, tls_key=pki.server.key) as api:
        assert _get_policy(api.channel) == grpc.StatusCode.OK
        yield api.server.port


def test_tls_serves_clients_that_trust_its_ca(tls_server: int, pki: Pki) -> None:
    target = f"localhost:{tls_server}"
    with grpc.insecure_channel(target) as plaintext:
        assert _get_policy(plaintext) == grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(target, channel_credentials(pki.stranger.cert)) as wrong_ca:
        assert _get_policy(wrong_ca) == grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(target, channel_credentials(pki.ca.cert)) as good:
        assert _get_policy(good) == grpc.StatusCode.OK


def test_mutual_tls_needs_a_client_certificate_from_the_ca(tmp_path: Path, pki: Pki) -> None:
    with running_server(
        tmp_path,
        channel_credentials(pki.ca.cert, pki.client.cert, pki.client.key),
        tls_cert=pki.server.cert,
        tls_key=pki.server.key,
        client_ca=pki.ca.cert,
    ) as api:
        assert _get_policy(api.channel) == grpc.StatusCode.OK
        target = f"localhost:{api.server.port}"
        with grpc.secure_channel(target, channel_credentials(pki.ca.cert)) as no_cert:
            assert _get_policy(no_cert) == grpc.StatusCode.UNAVAILABLE
        stranger = channel_credentials(pki.ca.cert, pki.stranger.cert, pki.stranger.key)
        with grpc.secure_channel(target, stranger) as wrong:
            assert _get_policy(wrong) == grpc.StatusCode.UNAVAILABLE


def test_token_files_in_yaml_and_csv() -> None:
    from_yaml = parse_tokens("tokens:\n  - {token: t1, role: admin, name: alice}\n", "f")
    assert from_yaml[0][1].name == "alice" and from_yaml[0][1].kind is RoleKind.ADMIN
    plain = parse_tokens("t1: viewer\nt2: 'member:lab-bio'\n", "f")
    assert [(t, p.role) for t, p in plain] == [("t1", "viewer"), ("t2", "member:lab-bio")]
    from_csv = parse_tokens("token,role,name\nt1,member:physics,bob\nt2,viewer\n", "f")
    assert [(t, p.role, p.name) for t, p in from_csv] == [
        ("t1", "member:physics", "bob"),
        ("t2", "viewer", "viewer"),
    ]
    for bad, message in (
        ("t1,root\n", "line 1: unknown role 'root'"),
        ("t1,admin\nt1,viewer\n", "line 2: duplicate token"),
        ("tokens:\n  - {token: t1}\n", "tokens[0]: needs `token` and `role`"),
        ("tokens:\n  - {token: t1, role: 'member:'}\n", "unknown role"),
    ):
        with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse_tokens(bad, "f")


def test_a_rotated_token_file_takes_effect(tmp_path: Path) -> None:
    path = tmp_path / "tokens.csv"
    path.write_text("old,admin\n")
    table = TokenTable(path)
    table.RECHECK_SECONDS = 0.0
    assert table.lookup("old") is not None
    path.write_text("new,viewer\n")
    os.utime(path, (1, 1))  # a different mtime, whatever the clock resolution
    assert table.lookup("old") is None
    found = table.lookup("new")
    assert found is not None and found.kind is RoleKind.VIEWER
    path.write_text("broken,nobody\n")
    os.utime(path, (2, 2))
    assert table.lookup("new") is not None, "a bad file keeps the last good table"
