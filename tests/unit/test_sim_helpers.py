"""Small builders for simulator tests: a policy, nodes and traces written inline."""

from __future__ import annotations

from datetime import UTC, datetime

from policies.loader import parse_policy
from policies.model import Policy
from scheduler.engine.snapshot import Node
from scheduler.traces.model import Trace, TraceJob

MODEL = "G"
START = datetime(2026, 10, 1, tzinfo=UTC)


def policy(
    members: dict[str, dict[str, object]] | None = None,
    *,
    models: tuple[str, ...] = (MODEL,),
    grace: int = 30,
    min_runtime: int = 0,
    half_life: float | None = None,
    sharing: dict[str, object] | None = None,
) -> Policy:
    members = members if members is not None else {"a": {}, "b": {}}
    lines = [
        "apiVersion: fairpool.io/v1",
        "kind: Policy",
        "spec:",
        "  gpuModels:",
    ]
    lines += [f"    - {{name: {m}, hourlyCost: '1.00'}}" for m in models]
    lines.append("  members:")
    for name, extra in members.items():
        fields = ", ".join(
            [f"name: {name}", f"namespaces: ['{name}']"]
            + [
                f"{k}: {v!r}" if not isinstance(v, bool) else f"{k}: {str(v).lower()}"
                for k, v in extra.items()
            ]
        )
        lines.append(f"    - {{{fields}}}")
    lines += [
        "  sharing:",
        f"    reclaimGracePeriodSeconds: {grace}",
        f"    minRuntimeSeconds: {min_runtime}",
    ]
    if half_life is not None:
        lines.append(f"    usageHalfLifeHours: {half_life}")
    lines += [f"    {k}: {v}" for k, v in (sharing or {}).items()]
    return parse_policy("\n".join(lines) + "\n")


def node(name: str, owner: str, gpus: int, model: str = MODEL, domain: str = "d") -> Node:
    return Node(
        name=name,
        owner=owner,
        gpu_model=model,
        gpus=gpus,
        cpu_milli=64_000,
        memory_bytes=512 << 30,
        topology_domain=domain,
        labels={"fairpool.io/owner": owner, "nvidia.com/gpu.product": model},
    )


def job(
    job_id: str,
    org: str,
    submit: float,
    duration: float,
    gpus: int,
    pods: int = 1,
    model: str | None = MODEL,
    priority: int = 0,
) -> TraceJob:
    return TraceJob(
        job_id=job_id,
        org=org,
        submit_time=submit,
        duration_s=duration,
        num_pods=pods,
        gpus_per_pod=gpus,
        gpu_model=model,
        priority=priority,
    )


def trace(*jobs: TraceJob) -> Trace:
    return Trace(tuple(sorted(jobs, key=lambda j: (j.submit_time, j.job_id))))


def test_policy_builder_writes_member_options() -> None:
    built = policy({"a": {"checkpointable": True, "weight": 2.0}, "b": {}}, half_life=2.0)
    assert built.member("a").checkpointable and built.member("a").weight == 2.0
    assert not built.member("b").checkpointable
    assert built.sharing.usage_half_life_hours == 2.0
