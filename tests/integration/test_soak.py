"""A short soak on the real control plane: the daemon (`fairpool run`, its own process)
with its API for a minute under mixed clients while pods finish and are replaced. No call
answers UNKNOWN and the daemon neither crashes nor fails to stop cleanly. Timing is
the benchmark's business (`python -m bench soak`), not this test's."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bench.bench_soak import SoakConfig, soak
from tests.controlplane import ControlPlane
from tests.integration.conftest import TEST_NAMESPACE_LABEL, TEST_NODE_LABEL

pytestmark = pytest.mark.integration


def test_a_short_soak_has_no_unknown_answer_and_no_crash(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    prefix = f"soak{uuid.uuid4().hex[:5]}"
    config = SoakConfig(
        minutes=1.0,
        warmup_minutes=0.25,
        nodes=20,
        pods=240,
        clients=10,
        watchers=2,
        rate=40.0,
        min_seconds=10.0,
        max_seconds=30.0,
        scheduler_name=f"fairpool-{prefix}",
        prefix=prefix,
        node_labels={TEST_NODE_LABEL: "true"},
        namespace_labels={TEST_NAMESPACE_LABEL: "true"},
    )
    result = soak(control_plane, config, tmp_path)
    assert result.unknown == 0, result.codes
    assert result.alive_at_end and result.exit_code == 0, (tmp_path / "fairpool.log").read_text()
    answered = {method for (method, code), n in result.codes.items() if code == "OK" and n}
    assert {"GetEntitlements", "ExplainPending", "ListPolicyVersions", "ValidatePolicy"} <= answered
    assert ("ValidatePolicy", "INVALID_ARGUMENT") in result.codes, "broken drafts are refused"
    assert result.samples[-1].binds > config.pods // 2, "the daemon kept binding"
    assert result.replaced > 0, "pods finished and were replaced while the clients ran"
    assert all(s.rss_mb > 0 for s in result.samples)
