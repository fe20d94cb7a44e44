"""Shared set-up for the API tests (no tests here): a real server on loopback over the
built-in demo cluster, a real engine, a real SQLite ledger and audit log."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pandas as pd

from policies.inventory import load_inventory
from policies.loader import DEFAULT_POLICY, load_policy
from proto.fairpool.v1 import policy_pb2_grpc, share_pb2_grpc, usage_pb2_grpc
from reports.ledger import Ledger
from scheduler.api.auth import TokenTable, parse_tokens
from scheduler.api.frozen_view import FrozenClusterView
from scheduler.api.policy_store import FileSource
from scheduler.api.server import ApiConfig, ApiServer

MEMBER_A = "uni-north"
MEMBER_B = "physics"
TOKENS = {
    "admin": "tok-admin-5f1c9a0e2b7d",
    f"member:{MEMBER_A}": "tok-member-a-83d0c6e4",
    f"member:{MEMBER_B}": "tok-member-b-1e9b7f25",
    "viewer": "tok-viewer-64a2d8c3f0",
}
TOKEN_FILE = "tokens:\n" + "".join(
    f"  - {{token: '{token}', role: '{role}', name: {role.replace(':', '-')}-person}}\n"
    for role, token in TOKENS.items()
)
ROLES = (*TOKENS, None)
"""Every role, and None for a caller without a token."""
USAGE_HOUR = datetime(2026, 10, 5, 10, tzinfo=UTC)
REPORT_MONTH = "2026-10"


def metadata(role: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[role]}"),) if role else ()


def seed_ledger(url: str) -> None:
    """One metered hour: uni-north uses its own H100s and borrows physics' A100s."""
    usage = pd.DataFrame(
        [
            ("p1", "uni-north", "j1", MEMBER_A, MEMBER_A, "NVIDIA-H100-80GB-HBM3", "n1", 7200.0),
            ("p2", "uni-north", "j2", MEMBER_A, MEMBER_B, "NVIDIA-A100-SXM4-80GB", "n2", 3600.0),
            ("p3", "physics", "j3", MEMBER_B, MEMBER_B, "NVIDIA-A100-SXM4-80GB", "n3", 1800.0),
        ],
        columns=[
            "pod_uid",
            "namespace",
            "job_id",
            "member",
            "owner",
            "gpu_model",
            "node",
            "gpu_seconds",
        ],
    ).assign(coverage=1.0, policy_version=1)
    capacity = pd.DataFrame(
        columns=["node", "owner", "gpu_model", "gpu_seconds_available", "coverage"]
    )
    with Ledger(url) as ledger:
        ledger.replace_hour(USAGE_HOUR, usage, capacity, None, 1.0)


@dataclass
class Running:
    server: ApiServer
    view: FrozenClusterView
    channel: grpc.Channel
    folder: Path
    policy_file: Path
    ledger_url: str

    @property
    def policy(self) -> policy_pb2_grpc.PolicyServiceStub:
        return policy_pb2_grpc.PolicyServiceStub(self.channel)

    @property
    def shares(self) -> share_pb2_grpc.ShareServiceStub:
        return share_pb2_grpc.ShareServiceStub(self.channel)

    @property
    def usage(self) -> usage_pb2_grpc.UsageServiceStub:
        return usage_pb2_grpc.UsageServiceStub(self.channel)


def make_config(folder: Path, **overrides: object) -> ApiConfig:
    policy_file = folder / "policy.yaml"
    if not policy_file.exists():
        policy_file.write_text(DEFAULT_POLICY.read_text())
    tokens = folder / "tokens.yaml"
    tokens.write_text(TOKEN_FILE)
    options: dict[str, object] = {
        "tokens": TokenTable(tokens),
        "policy_source": FileSource(policy_file),
        "ledger_url": f"sqlite:///{folder / 'ledger.db'}",
        "address": "127.0.0.1:0",
        "max_workers": 16,
    }
    options.update(overrides)
    return ApiConfig(**options)  # type: ignore[arg-type]


@contextlib.contextmanager
def running_server(
    folder: Path, channel_credentials: grpc.ChannelCredentials | None = None, **overrides: object
) -> Iterator[Running]:
    config = make_config(folder, **overrides)
    seed_ledger(config.ledger_url)
    view = FrozenClusterView.from_inventory(load_policy(folder / "policy.yaml"), load_inventory())
    server = ApiServer(view, config).start()
    target = f"localhost:{server.port}"
    channel = (
        grpc.secure_channel(target, channel_credentials)
        if channel_credentials is not None
        else grpc.insecure_channel(target)
    )
    try:
        yield Running(server, view, channel, folder, folder / "policy.yaml", config.ledger_url)
    finally:
        channel.close()
        server.stop(grace=0.5)


def one_week_ago() -> datetime:
    return datetime.now(UTC) - timedelta(days=7)


assert len(parse_tokens(TOKEN_FILE, "tokens")) == len(TOKENS)
