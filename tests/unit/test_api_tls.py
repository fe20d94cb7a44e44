"""TLS and mutual TLS on loopback with certificates made in the test; token files."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import re
import shutil
import socket
import ssl
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
from scheduler.api.tls import channel_credentials, is_loopback
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


@pytest.fixture(params=[False, True], ids=["one-process", "front-process"])
def tls_server(tmp_path: Path, pki: Pki, request: pytest.FixtureRequest) -> Iterator[int]:
    creds = channel_credentials(pki.ca.cert)
    with running_server(
        tmp_path,
        creds,
        tls_cert=pki.server.cert,
        tls_key=pki.server.key,
        read_front=request.param,
    ) as api:
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


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("localhost:0", True),
        ("[::1]:50051", True),
        ("127.8.9.1:1", True),
        ("unix:/run/fairpool.sock", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        (":50051", False),
        ("10.0.0.7:50051", False),
        ("fairpool.example.org:443", False),
    ],
)
def test_loopback_addresses(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_plaintext_outside_loopback_is_refused_unless_asked_for_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        pytest.raises(InputError, match=r"without TLS.*--insecure-plaintext"),
        running_server(tmp_path, address="0.0.0.0:0"),
    ):
        pass
    with (
        caplog.at_level(logging.WARNING),
        running_server(tmp_path, address="0.0.0.0:0", insecure_plaintext=True) as api,
    ):
        assert _get_policy(api.channel) == grpc.StatusCode.OK
    assert any("INSECURE" in r.getMessage() for r in caplog.records)


def test_tls_outside_loopback_needs_no_flag(tmp_path: Path, pki: Pki) -> None:
    creds = channel_credentials(pki.ca.cert)
    with running_server(
        tmp_path, creds, address="0.0.0.0:0", tls_cert=pki.server.cert, tls_key=pki.server.key
    ) as api:
        assert _get_policy(api.channel) == grpc.StatusCode.OK


def test_the_cli_never_sends_a_token_in_clear_to_another_host() -> None:
    from click.testing import CliRunner

    from scheduler.cli.main import cli

    runner = CliRunner()
    args = ["shares", "--server", "192.0.2.1:50051", "--token", "k8Hd9s-Qm2xV7pLr"]
    refused = runner.invoke(cli, args)
    assert refused.exit_code == 2
    assert "refusing to send a bearer token in plaintext" in refused.output
    assert refused.exception is None or isinstance(refused.exception, SystemExit)


def test_insecure_lets_the_cli_connect_in_plaintext_with_a_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The channel is made and never used: tests send nothing beyond loopback (the CLI
    # run with --insecure once tried this address, and waited for its timeout).
    from scheduler.cli.client import connect

    client = connect("192.0.2.1:50051", "k8Hd9s-Qm2xV7pLr", None, insecure=True)
    try:
        assert "plaintext connection to 192.0.2.1:50051" in capsys.readouterr().err
    finally:
        client.channel.close()


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("tökén-0123456789abcdef", "token has characters other than"),
        ("0123456789abcdef0123456789abcdef\n", "token has characters other than"),
        ("k8Hd9s", "token shorter than 16 characters"),
    ],
)
def test_a_token_the_server_could_never_take_is_refused_before_sending(
    token: str, problem: str
) -> None:
    # gRPC refused to send it: exit 1 "INTERNAL: Invalid metadata" and C-core log lines.
    from click.testing import CliRunner

    from scheduler.cli.main import cli

    result = CliRunner().invoke(cli, ["shares", "--server", "127.0.0.1:1", "--token", token])
    assert result.exit_code == 2
    assert f"--token (or FAIRPOOL_TOKEN): {problem}" in result.output
    assert token.strip() not in result.output


def test_tls_files_that_do_not_parse_are_named_before_listening(pki: Pki, tmp_path: Path) -> None:
    # gRPC read them at bind time: "cannot listen on ADDRESS: taken by another process"
    # (server) or UNAVAILABLE "failed to create security handshaker" (client).
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    cases = [
        (dict(tls_cert=junk, tls_key=pki.server.key), f"TLS certificate {junk}: not a PEM"),
        (dict(tls_cert=pki.server.cert, tls_key=junk), f"TLS key {junk}: not a PEM private"),
        (
            dict(tls_cert=pki.server.cert, tls_key=pki.client.key),
            f"TLS key {pki.client.key}: not the key of TLS certificate {pki.server.cert}",
        ),
        (
            dict(tls_cert=pki.server.cert, tls_key=pki.server.key, client_ca=junk),
            f"client CA {junk}: not a PEM certificate",
        ),
    ]
    for files, message in cases:
        with (
            pytest.raises(InputError, match=re.escape(message)),
            running_server(tmp_path, address="127.0.0.1:0", **files),
        ):
            pass
    with pytest.raises(InputError, match=re.escape(f"CA certificate {junk}: not a PEM")):
        channel_credentials(junk)
    with pytest.raises(InputError, match=re.escape(f"TLS key {pki.server.key}: not the key")):
        channel_credentials(pki.ca.cert, pki.client.cert, pki.server.key)


def _served_subject(port: int) -> str:
    """The common name of the certificate the server presents to a new connection."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as plain,
        context.wrap_socket(plain) as wrapped,
    ):
        der = wrapped.getpeercert(binary_form=True)
    assert der is not None
    name = x509.load_der_x509_certificate(der).subject
    return str(name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


@pytest.mark.parametrize("read_front", [False, True], ids=["one-process", "front-process"])
def test_a_renewed_certificate_is_served_without_a_restart(
    tmp_path: Path, pki: Pki, read_front: bool
) -> None:
    # As the kubelet mounts a Secret: the files change in place when cert-manager renews it.
    ca = x509.load_pem_x509_certificate(pki.ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca.key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    renewed = issue(tmp_path, "renewed", (ca, ca_key), server=True)
    mounted = Pair(tmp_path / "tls.crt", tmp_path / "tls.key")
    shutil.copy(pki.server.cert, mounted.cert)
    shutil.copy(pki.server.key, mounted.key)
    creds = channel_credentials(pki.ca.cert)
    with running_server(
        tmp_path, creds, tls_cert=mounted.cert, tls_key=mounted.key, read_front=read_front
    ) as api:
        assert _served_subject(api.server.port) == "server"
        # Half written (the new certificate, the old key): the old pair is still served.
        shutil.copy(renewed.cert, mounted.cert)
        assert _served_subject(api.server.port) == "server"
        shutil.copy(renewed.key, mounted.key)
        assert _served_subject(api.server.port) == "renewed"
        target = f"localhost:{api.server.port}"
        with grpc.secure_channel(target, channel_credentials(pki.ca.cert)) as fresh:
            assert _get_policy(fresh) == grpc.StatusCode.OK
