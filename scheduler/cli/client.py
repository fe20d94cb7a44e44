"""What every `fairpool` command that talks to the gRPC API shares: the connection
options (`--server`, `--token`, `--ca`, `--tls`, `--insecure`, with FAIRPOOL_SERVER,
FAIRPOOL_TOKEN, FAIRPOOL_CA) and the exit codes: 0 done, 1 the server said no (or could
not be reached), 2 bad input (ours, or INVALID_ARGUMENT from the server).

A bearer token is never sent in clear to another machine: a server that is not on
loopback is reached over TLS (`--ca`, or `--tls` to trust the system's roots), or, with
`--insecure`, in plaintext after a warning."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
import grpc
from rich.console import Console
from rich.markup import escape

from policies.errors import InputError
from proto.fairpool.v1 import policy_pb2_grpc, share_pb2_grpc, usage_pb2_grpc
from scheduler.cli.options import Address, FiniteRange

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_SERVER = "localhost:50051"
MAX_RESPONSE_BYTES = 64 << 20
MAX_TIMEOUT_S = 86_400.0
"""A day: the longest call (a what-if over a long trace) is far shorter."""
EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2


@dataclass
class Client:
    channel: grpc.Channel
    token: str | None
    timeout: float

    @property
    def policy(self) -> policy_pb2_grpc.PolicyServiceStub:
        return policy_pb2_grpc.PolicyServiceStub(self.channel)

    @property
    def shares(self) -> share_pb2_grpc.ShareServiceStub:
        return share_pb2_grpc.ShareServiceStub(self.channel)

    @property
    def usage(self) -> usage_pb2_grpc.UsageServiceStub:
        return usage_pb2_grpc.UsageServiceStub(self.channel)

    def options(self) -> dict[str, Any]:
        """Keyword arguments for every stub call: the bearer token and the deadline."""
        metadata = (("authorization", f"Bearer {self.token}"),) if self.token else ()
        return {"metadata": metadata, "timeout": self.timeout}


def connect(
    server: str,
    token: str | None,
    ca: Path | None,
    cert: Path | None = None,
    key: Path | None = None,
    timeout: float = 30.0,
    *,
    tls: bool = False,
    insecure: bool = False,
) -> Client:
    """A channel to `server`: TLS when a CA, a client certificate or `tls` is given;
    plaintext to a loopback server; to any other server plaintext only with `insecure`
    (else an InputError: the token would cross the network in clear)."""
    from scheduler.api.auth import check_token
    from scheduler.api.tls import channel_credentials, is_loopback

    if token:
        # As the server reads tokens: one it cannot hold is refused here, naming the
        # option (gRPC sent it and failed with "INTERNAL: Invalid metadata", exit 1).
        check_token(token, "--token (or FAIRPOOL_TOKEN)")
    options = [("grpc.max_receive_message_length", MAX_RESPONSE_BYTES)]
    if ca is not None or cert is not None or tls:
        if insecure:
            raise InputError(
                "--insecure (plaintext) and TLS (--ca, --cert, --tls) exclude each other"
            )
        channel = grpc.secure_channel(server, channel_credentials(ca, cert, key), options)
        return Client(channel, token or None, timeout)
    if not is_loopback(server):
        if not insecure:
            raise InputError(
                f"refusing to send a bearer token in plaintext to {server}: give --ca FILE "
                "(or --tls to trust the system's CAs) for TLS, or --insecure to send it in clear"
            )
        Console(stderr=True, highlight=False).print(
            f"[bold yellow]warning:[/] plaintext connection to {escape(server)} (--insecure): "
            "the bearer token crosses the network unencrypted"
        )
    channel = grpc.insecure_channel(server, options)
    return Client(channel, token or None, timeout)


def client_options(command: F | None = None, *, timeout: float = 30.0) -> Any:
    """Adds the connection options; the command receives `client: Client`. Use as
    `@client_options`, or `@client_options(timeout=...)` for a longer default deadline."""
    if command is None:
        return functools.partial(client_options, timeout=timeout)
    default_timeout = timeout

    @click.option(
        "--server",
        type=Address(listen=False),
        envvar="FAIRPOOL_SERVER",
        default=DEFAULT_SERVER,
        show_default=True,
        help="host:port of the fairpool API [env FAIRPOOL_SERVER]",
    )
    @click.option("--token", envvar="FAIRPOOL_TOKEN", help="bearer token [env FAIRPOOL_TOKEN]")
    @click.option(
        "--ca",
        envvar="FAIRPOOL_CA",
        type=click.Path(path_type=Path, dir_okay=False),
        help="CA certificate: use TLS and trust it [env FAIRPOOL_CA]",
    )
    @click.option(
        "--cert",
        envvar="FAIRPOOL_CERT",
        type=click.Path(path_type=Path, dir_okay=False),
        help="client certificate for mutual TLS [env FAIRPOOL_CERT]",
    )
    @click.option(
        "--key",
        envvar="FAIRPOOL_KEY",
        type=click.Path(path_type=Path, dir_okay=False),
        help="client key for mutual TLS [env FAIRPOOL_KEY]",
    )
    @click.option(
        "--tls",
        is_flag=True,
        envvar="FAIRPOOL_TLS",
        help="use TLS and trust the system's CAs [env FAIRPOOL_TLS]",
    )
    @click.option(
        "--insecure",
        is_flag=True,
        help="allow a plaintext connection to a server that is not on loopback",
    )
    @click.option(
        "--timeout",
        # nan, infinity or 1e300 gave DEADLINE_EXCEEDED at once: gRPC's deadline overflows.
        type=FiniteRange(min=0.1, max=MAX_TIMEOUT_S),
        default=default_timeout,
        show_default=True,
        help="seconds before a call is given up",
    )
    @functools.wraps(command)
    def wrapper(
        *args: Any,
        server: str,
        token: str | None,
        ca: Path | None,
        cert: Path | None,
        key: Path | None,
        tls: bool,
        insecure: bool,
        timeout: float,
        **kwargs: Any,
    ) -> Any:
        client = connect(server, token, ca, cert, key, timeout, tls=tls, insecure=insecure)
        try:
            with rpc_errors():
                return command(*args, client=client, **kwargs)
        finally:
            client.channel.close()

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def rpc_errors() -> Iterator[None]:
    """A refused call becomes a message on stderr and exit code 1 (2 for bad input)."""
    try:
        yield
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        details = exc.details() if hasattr(exc, "details") else str(exc)
        err = Console(stderr=True, soft_wrap=True, highlight=False)
        name = code.name if code is not None else "UNKNOWN"
        err.print(f"[bold red]error:[/] {name}: {escape(details or '')}")
        raise click.exceptions.Exit(
            EXIT_BAD_INPUT if code == grpc.StatusCode.INVALID_ARGUMENT else EXIT_REFUSED
        ) from None
