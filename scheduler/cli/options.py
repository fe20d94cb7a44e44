"""Option types the commands share."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from click.core import ParameterSource

from policies.errors import InputError
from scheduler.k8s.names import name_problem

DEFAULT_LEDGER = "sqlite:///fairpool-ledger.db"

F = TypeVar("F", bound=Callable[..., Any])


URL_FILE_FLAG = "--ledger-url-file"
URL_FILE_ENV = "FAIRPOOL_LEDGER_URL_FILE"


def ledger_option(help: str, flag: str = "--ledger") -> Callable[[F], F]:
    """`--ledger URL` (`flag`), the same default and default text on every command that
    reads the usage ledger (`report monthly` showed none, though it took the same), and
    `--ledger-url-file PATH` beside it: the URL in a file (a mounted Secret), read again
    for every new connection so a rotated password needs no restart. The command gets
    one `ledger_url` either way."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def resolving(*args: Any, ledger_url: str, ledger_url_file: Path | None, **kw: Any) -> Any:
            return command(*args, ledger_url=_ledger_url(ledger_url, ledger_url_file, flag), **kw)

        with_file = click.option(
            URL_FILE_FLAG,
            "ledger_url_file",
            envvar=URL_FILE_ENV,
            type=click.Path(path_type=Path),
            default=None,
            help=f"File holding the ledger URL, read again for each new connection (a "
            f"mounted Secret: a rotated password needs no restart); not with {flag} "
            f"[env {URL_FILE_ENV}]",
        )(resolving)
        return cast(
            F,
            click.option(
                flag,
                "ledger_url",
                # Read when the command runs, not at import: a test or a shell sets it later.
                default=lambda: os.environ.get("FAIRPOOL_LEDGER", DEFAULT_LEDGER),
                show_default=f"$FAIRPOOL_LEDGER or {DEFAULT_LEDGER}",
                help=help,
            )(with_file),
        )

    return decorate


def _ledger_url(url: str, url_file: Path | None, flag: str) -> str:
    if url_file is None:
        return url
    ctx = click.get_current_context()
    url_source = ctx.get_parameter_source("ledger_url")
    if url_source == ParameterSource.DEFAULT and "FAIRPOOL_LEDGER" in os.environ:
        url_source = ParameterSource.ENVIRONMENT
    if url_source not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
        # Which of the two to use is a guess either way: a stale URL left in the
        # environment would win over the file, or the file over a URL given on purpose.
        raise InputError(
            f"{_said(flag, 'FAIRPOOL_LEDGER', url_source)} and "
            f"{_said(URL_FILE_FLAG, URL_FILE_ENV, ctx.get_parameter_source('ledger_url_file'))}:"
            " give one of them"
        )
    # Imported here: a scheduler without a ledger starts without SQLAlchemy.
    from reports.ledger.url_file import read_url_file

    return read_url_file(url_file, URL_FILE_FLAG)


def _said(flag: str, env: str, source: ParameterSource | None) -> str:
    return f"{flag} (from ${env})" if source == ParameterSource.ENVIRONMENT else flag


class FiniteRange(click.FloatRange):
    """`click.FloatRange` that also refuses nan and infinity (which compare false with
    both bounds, so the range alone would let them through)."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


class Address(click.ParamType):
    """`host:port` (`[v6]:port` too). gRPC and the socket libraries take a port number
    modulo 65536 or fail deep inside: `127.0.0.1:99999` listened on port 34463. `listen`:
    port 0 (any free port) is allowed; otherwise a client's gRPC target, which may also
    be a `unix:` socket or carry a `dns:///`, `ipv4:` or `ipv6:` scheme."""

    name = "host:port"

    def __init__(self, listen: bool) -> None:
        self.listen = listen

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value).strip()
        if not self.listen and text.startswith(("unix:", "unix-abstract:")):
            return text
        bare = text
        if not self.listen:
            for scheme in ("dns:///", "ipv4:", "ipv6:"):
                bare = bare.removeprefix(scheme)
        if bare.startswith("["):
            host, close, rest = bare[1:].partition("]")
            sep, port = rest[:1], rest[1:]
            if not close:
                sep = ""
        else:
            host, sep, port = bare.rpartition(":")
        lowest = 0 if self.listen else 1
        # `isdigit` alone takes '²' (an int() traceback) and other scripts' digits.
        digits = port.isascii() and port.isdigit()
        if not (sep == ":" and host and digits and lowest <= int(port) <= 65535):
            self.fail(f"{value!r} is not host:port with a port from {lowest} to 65535.", param, ctx)
        return text


class KubeName(click.ParamType):
    """A name the Kubernetes API would refuse (or, for a scheduler name, never see on a
    pod) is refused here, naming the flag, instead of failing the daemon's first write
    (a Lease, a ConfigMap) or leaving it waiting for pods no spec can name."""

    name = "name"

    def __init__(self, form: str, empty_ok: bool = False) -> None:
        self.form = form
        self.empty_ok = empty_ok

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value == "" and self.empty_ok:
            return value
        problem = name_problem(str(value), self.form)
        if problem is not None:
            self.fail(problem, param, ctx)
        return value
