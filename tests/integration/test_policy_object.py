"""The Policy object on the local control plane: the CRD, `kubectl apply` taken or refused
by a running `fairpool run --policy-object`, the schema refusing what it can, the gRPC
ApplyPolicy writing the object, and the daemon's /healthz and /readyz."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from kubernetes import client as k8s

from policies.crd import GROUP, PLURAL, VERSION
from policies.errors import InputError
from proto.fairpool.v1 import policy_pb2
from scheduler.api.hosting import serve_daemon_api
from scheduler.api.policy_audit import AuditLog
from scheduler.api.policy_store import Origin, PolicyObjectSource, VersionConflict
from scheduler.k8s.client import api_client
from scheduler.k8s.daemon import Daemon, DaemonConfig
from tests.controlplane import ControlPlane
from tests.controlplane.build import binary_path
from tests.integration.test_api_daemon import ADMIN, Api
from tests.integration.test_daemon import H100, Pool, wait_until
from tests.integration.test_daemon_ha import fast_lease
from tests.unit.test_api_support import TOKEN_FILE

pytestmark = pytest.mark.integration


@pytest.fixture
def pool(control_plane: ControlPlane, namespace: str, policy_crd: str) -> Iterator[Pool]:
    """As in test_daemon (namespace for its clean-up); the Policy object named after the
    pool is deleted after the test."""
    result = Pool(control_plane, f"fpobj{uuid.uuid4().hex[:5]}", k8s.CoreV1Api(control_plane.admin))
    try:
        yield result
    finally:
        for daemon in result.daemons:
            with contextlib.suppress(Exception):
                daemon.stop()
        with contextlib.suppress(Exception):
            _custom(control_plane).delete_cluster_custom_object(
                GROUP, VERSION, PLURAL, result.prefix
            )


def _custom(plane: ControlPlane) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(plane.admin)


def _kubectl(
    plane: ControlPlane, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary_path("kubectl")), "--kubeconfig", str(plane.kubeconfig("admin")), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _fairpool_run(plane: ControlPlane, log: Path, *flags: str) -> subprocess.Popen[bytes]:
    """`fairpool run` finding its credentials in $KUBECONFIG, as kubectl would (no
    --kubeconfig flag), with the scheduler's identity."""
    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig("scheduler"))}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    command = [str(Path(sys.executable).with_name("fairpool")), "run", *flags]
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def _policy_object(pool: Pool, purchased: dict[str, int] | None = None, **member: Any) -> str:
    """The pool's policy as a Policy object named after the pool (for `kubectl apply`)."""
    document = yaml.safe_load(pool.policy_text())
    document["metadata"] = {"name": pool.prefix}
    first = document["spec"]["members"][0]
    if purchased is not None:
        first["purchased"] = purchased
    first.update(member)
    return yaml.safe_dump(document)


def _object(pool: Pool) -> dict[str, Any]:
    found: dict[str, Any] = _custom(pool.plane).get_cluster_custom_object(
        GROUP, VERSION, PLURAL, pool.prefix
    )
    return found


def _ready(obj: dict[str, Any]) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


def _entitlements(obj: dict[str, Any]) -> dict[str, int]:
    members = (obj.get("status") or {}).get("members") or []
    return {
        m["name"]: sum(g["entitlement"] for g in m.get("gpuModels", []))
        for m in members
        if m.get("gpuModels")
    }


def _when(pool: Pool, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    """The Policy object when `check` holds for it, else None (for wait_until)."""
    obj = _object(pool)
    return obj if check(obj) else None


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _object_daemon(pool: Pool, ledger: Path, **config: Any) -> Daemon:
    settings: dict[str, Any] = {
        "leader_elect": False,
        "cycle_seconds": 0.5,
        "watch_pod_groups": False,
        "usage_history_configmap": None,
        "policy_status_seconds": 1.0,
    }
    settings.update(config)
    daemon = Daemon(
        api_client(pool.plane.kubeconfig("scheduler"), pool_size=32),
        config=DaemonConfig(**settings),
        policy_object=pool.prefix,
        policy_audit=AuditLog(f"sqlite:///{ledger}"),
    )
    pool.daemons.append(daemon)
    return daemon


def test_crd_is_established_and_prints_its_columns(pool: Pool, policy_crd: str) -> None:
    crd = k8s.ApiextensionsV1Api(pool.plane.admin).read_custom_resource_definition(policy_crd)
    conditions = {c.type: c.status for c in crd.status.conditions}
    assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True"
    assert crd.spec.scope == "Cluster"
    pool.add_member("a")
    applied = _kubectl(pool.plane, "apply", "-f", "-", stdin=_policy_object(pool))
    assert applied.returncode == 0, applied.stderr
    listed = _kubectl(pool.plane, "get", "policies", pool.prefix)
    assert listed.stdout.split()[:5] == ["NAME", "VERSION", "MEMBERS", "READY", "AGE"]


def test_kubectl_apply_is_taken_or_refused_by_fairpool_run(pool: Pool, tmp_path: Path) -> None:
    for m in ("a", "b"):
        pool.add_member(m)
    pool.add_nodes("a", count=1, gpus=8)
    pool.add_nodes("b", count=1, gpus=4)
    applied = _kubectl(pool.plane, "apply", "-f", "-", stdin=_policy_object(pool))
    assert applied.returncode == 0, applied.stderr
    ledger = tmp_path / "ledger.db"
    log = tmp_path / "fairpool.log"
    process = _fairpool_run(
        pool.plane,
        log,
        "--policy-object",
        pool.prefix,
        "--ledger-url",
        f"sqlite:///{ledger}",
        "--no-leader-elect",
        "--usage-history-configmap",
        "",
        "--log-format",
        "json",
        "--metrics-port",
        "0",
        "--metrics-address",
        "127.0.0.1",
    )
    try:
        try:
            # A new process imports and syncs first: slow on a loaded machine.
            obj = wait_until(
                lambda: _when(pool, lambda o: _entitlements(o) == {"a": 8, "b": 4}),
                timeout=120,
                what="status with entitlements",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text() if log.exists() else ''}") from exc
        status = obj["status"]
        assert status["version"] == 1 and status["memberCount"] == 2
        assert status["observedGeneration"] == status["generationInForce"] == 1
        assert (_ready(obj)["status"], _ready(obj)["reason"]) == ("True", "PolicyInForce")
        columns = _kubectl(pool.plane, "get", "policy", pool.prefix, "--no-headers").stdout.split()
        assert columns[:4] == [pool.prefix, "1", "2", "True"]

        # A purchase adds to the entitlement: a new generation, taken as version 2.
        applied = _kubectl(
            pool.plane, "apply", "-f", "-", stdin=_policy_object(pool, purchased={H100: 2})
        )
        assert applied.returncode == 0, applied.stderr
        obj = wait_until(
            lambda: _when(pool, lambda o: _entitlements(o).get("a") == 10),
            what="entitlement of a after the purchase",
        )
        assert obj["status"]["version"] == 2 and obj["status"]["generationInForce"] == 2

        # An unknown GPU model in purchases: the schema cannot say it, the daemon refuses.
        applied = _kubectl(
            pool.plane, "apply", "-f", "-", stdin=_policy_object(pool, purchased={"TPU-v9": 1})
        )
        assert applied.returncode == 0, applied.stderr
        obj = wait_until(
            lambda: _when(pool, lambda o: _ready(o).get("status") == "False"),
            what="Ready=False after the invalid generation",
        )
        ready = _ready(obj)
        assert ready["reason"] == "PolicyRefused" and ready["observedGeneration"] == 3
        assert ready["message"].startswith(
            "generation 3 refused: spec.members[0].purchased.TPU-v9: unknown GPU model 'TPU-v9'"
        ), ready["message"]
        assert "version 2 stays in force" in ready["message"]
        assert obj["status"]["version"] == 2 and obj["status"]["generationInForce"] == 2
        assert obj["status"]["observedGeneration"] == 3
        assert _entitlements(obj)["a"] == 10, "the old version stays in force"
        events = wait_until(
            lambda: [
                e
                for e in pool.core.list_namespaced_event("default").items
                if e.involved_object.name == pool.prefix and e.reason == "PolicyRefused"
            ],
            what="PolicyRefused event",
        )
        assert events[0].type == "Warning" and events[0].involved_object.kind == "Policy"
        described = _kubectl(pool.plane, "describe", "policy", pool.prefix).stdout
        assert "PolicyRefused" in described

        # Two members claiming one namespace: refused as well.
        duplicate = _policy_object(pool, namespaces=[pool.ns("a"), pool.ns("b")])
        assert _kubectl(pool.plane, "apply", "-f", "-", stdin=duplicate).returncode == 0
        obj = wait_until(
            lambda: _when(pool, lambda o: _ready(o).get("observedGeneration") == 4),
            what="generation 4 looked at",
        )
        assert (
            "spec.members[1].namespaces[0]: namespace "
            f"'{pool.ns('b')}' is already claimed by member 'a'" in _ready(obj)["message"]
        )
        assert obj["status"]["version"] == 2

        # Valid on its own but not pricing the nodes' GPU model: refused, since every
        # month with an hour under it would fail to bill.
        unpriced = _policy_object(pool).replace(H100, "NVIDIA-B200")
        assert _kubectl(pool.plane, "apply", "-f", "-", stdin=unpriced).returncode == 0
        obj = wait_until(
            lambda: _when(pool, lambda o: _ready(o).get("observedGeneration") == 5),
            what="generation 5 looked at",
        )
        assert (
            f"generation 5 refused: spec.gpuModels: the cluster has nodes of '{H100}' ("
        ) in _ready(obj)["message"]
        assert obj["status"]["version"] == 2

        # Fixed again: taken as version 3.
        assert _kubectl(pool.plane, "apply", "-f", "-", stdin=_policy_object(pool)).returncode == 0
        obj = wait_until(
            lambda: _when(pool, lambda o: _ready(o).get("status") == "True"),
            what="Ready again",
        )
        assert obj["status"]["version"] == 3 and _entitlements(obj)["a"] == 8
    finally:
        process.terminate()
        process.wait(timeout=30)
    versions = AuditLog(f"sqlite:///{ledger}").list()
    assert [(v.version, v.origin) for v in versions] == [
        (3, Origin.EXTERNAL),
        (2, Origin.EXTERNAL),
        (1, Origin.BOOTSTRAP),
    ]
    assert all(v.author == f"source:policy/{pool.prefix}" for v in versions)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any("refused" in line["message"] and line["level"] == "ERROR" for line in lines)


def test_schema_refuses_what_it_can_say(pool: Pool) -> None:
    pool.add_member("a")
    base = yaml.safe_load(_policy_object(pool))
    cases: list[tuple[str, str]] = []
    bad = json.loads(json.dumps(base))
    bad["spec"]["billing"] = {"idleCost": "whoever"}
    cases.append((yaml.safe_dump(bad), "spec.billing.idleCost"))
    bad = json.loads(json.dumps(base))
    bad["spec"]["members"][0]["weight"] = 0
    cases.append((yaml.safe_dump(bad), "spec.members[0].weight"))
    bad = json.loads(json.dumps(base))
    bad["spec"]["gpuModels"][0]["hourlyCost"] = "-2.40"
    cases.append((yaml.safe_dump(bad), "spec.gpuModels[0].hourlyCost"))
    bad = json.loads(json.dumps(base))
    del bad["spec"]["gpuModels"]
    cases.append((yaml.safe_dump(bad), "spec.gpuModels"))
    bad = json.loads(json.dumps(base))
    bad["spec"]["members"][0]["colour"] = "red"
    cases.append((yaml.safe_dump(bad), 'unknown field "spec.members[0].colour"'))
    bad = json.loads(json.dumps(base))
    bad["spec"]["members"].append(dict(bad["spec"]["members"][0]))
    cases.append((yaml.safe_dump(bad), "spec.members[1]: Duplicate value"))
    for text, field in cases:
        result = _kubectl(pool.plane, "apply", "-f", "-", stdin=text)
        assert result.returncode != 0, f"accepted: {text}"
        assert field in result.stderr, result.stderr
    assert _kubectl(pool.plane, "get", "policy", pool.prefix).returncode != 0, "nothing stored"


def test_grpc_apply_policy_writes_the_object(pool: Pool, tmp_path: Path) -> None:
    for m in ("a", "b"):
        pool.add_member(m)
    pool.add_nodes("a", count=1, gpus=8)
    assert _kubectl(pool.plane, "apply", "-f", "-", stdin=_policy_object(pool)).returncode == 0
    daemon = _object_daemon(pool, tmp_path / "ledger.db").start()
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(TOKEN_FILE)
    api = Api(
        serve_daemon_api(
            daemon,
            pool.plane.scheduler,
            tokens=tokens,
            ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
            listen="127.0.0.1:0",
            max_workers=4,
        )
    )
    try:
        current = api.policy.GetPolicy(policy_pb2.GetPolicyRequest(), metadata=ADMIN).policy
        assert current.version == 1
        document = yaml.safe_load(current.yaml)
        document["spec"]["members"][1]["purchased"] = {H100: 3}
        reply = api.policy.ApplyPolicy(
            policy_pb2.ApplyPolicyRequest(
                yaml=yaml.safe_dump(document), expected_version=1, comment="b buys 3"
            ),
            metadata=ADMIN,
        )
        assert reply.applied.version == 2
        obj = _object(pool)
        assert obj["spec"]["members"][1]["purchased"] == {H100: 3}
        assert obj["metadata"]["generation"] == 2
        wait_until(
            lambda: (
                _entitlements(_object(pool)).get("b") == 3
                and _object(pool)["status"]["version"] == 2
            ),
            what="status of the version the API applied",
        )
        assert daemon.policy().version == 2

        # A stale expected version: ABORTED, as with the other sources.
        with pytest.raises(grpc.RpcError) as stale:
            api.policy.ApplyPolicy(
                policy_pb2.ApplyPolicyRequest(yaml=yaml.safe_dump(document), expected_version=1),
                metadata=ADMIN,
            )
        assert stale.value.code() == grpc.StatusCode.ABORTED

        # kubectl apply meanwhile: a new external version; the API's next apply bases on it.
        assert _kubectl(pool.plane, "apply", "-f", "-", stdin=_policy_object(pool)).returncode == 0
        wait_until(lambda: daemon.policy().version == 3, what="external version 3")
        history = api.policy.ListPolicyVersions(
            policy_pb2.ListPolicyVersionsRequest(), metadata=ADMIN
        ).versions
        assert [(v.version, v.author) for v in history][:2] == [
            (3, f"source:policy/{pool.prefix}"),
            (2, "admin-person"),
        ]
        assert history[1].comment == "b buys 3"

        # The source's own optimistic concurrency: a write on an old resourceVersion is a
        # conflict (another writer came first), answered ABORTED by ApplyPolicy.
        source = PolicyObjectSource(_custom(pool.plane), pool.prefix)
        text, revision = source.read()
        changed = yaml.safe_load(text)
        changed["spec"]["members"][0]["weight"] = 2
        assert source.write(yaml.safe_dump(changed), revision) != revision
        with pytest.raises(VersionConflict):
            source.write(text, revision)
    finally:
        api.close()


def test_grpc_apply_policy_with_money_in_exponent_notation(pool: Pool, tmp_path: Path) -> None:
    """`hourlyCost: "1E+2"` is valid (docs/policy.md); it was written to the object as
    such, which the schema refuses, and ApplyPolicy answered INTERNAL."""
    pool.add_member("a")
    pool.add_nodes("a", count=1, gpus=8)
    assert _kubectl(pool.plane, "apply", "-f", "-", stdin=_policy_object(pool)).returncode == 0
    daemon = _object_daemon(pool, tmp_path / "ledger.db").start()
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(TOKEN_FILE)
    api = Api(
        serve_daemon_api(
            daemon,
            pool.plane.scheduler,
            tokens=tokens,
            ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
            listen="127.0.0.1:0",
            max_workers=4,
        )
    )
    try:
        document = yaml.safe_load(_policy_object(pool))
        document["spec"]["gpuModels"][0]["hourlyCost"] = "1E+2"
        reply = api.policy.ApplyPolicy(
            policy_pb2.ApplyPolicyRequest(yaml=yaml.safe_dump(document)), metadata=ADMIN
        )
        assert reply.applied.version == 2
        assert _object(pool)["spec"]["gpuModels"][0]["hourlyCost"] == "100"
        wait_until(lambda: _object(pool)["status"]["version"] == 2, what="version 2 in force")
        assert daemon.policy().gpu_model(H100).hourly_cost == 100
        # kubectl apply takes the same notation (its schema refused "2.5E+1" and ".5").
        document["spec"]["gpuModels"][0]["hourlyCost"] = "2.5E+1"
        document["spec"]["billing"] = {
            "sharedFixedCosts": [{"name": "rack", "monthlyAmount": ".5"}]
        }
        applied = _kubectl(pool.plane, "apply", "-f", "-", stdin=yaml.safe_dump(document))
        assert applied.returncode == 0, applied.stderr
        wait_until(lambda: daemon.policy().version == 3, what="version 3 in force")
        assert daemon.policy().gpu_model(H100).hourly_cost == 25
    finally:
        api.close()


def test_a_generation_the_ledger_could_not_record_is_taken_once_it_answers(
    pool: Pool, tmp_path: Path
) -> None:
    """A `kubectl apply` while the audit history does not answer: the generation was
    marked as looked at and never taken (Ready stayed True with the old generation), so
    the change was lost until the object was edited again."""
    for m in ("a", "b"):
        pool.add_member(m)
    pool.add_nodes("a", count=1, gpus=8)
    pool.add_nodes("b", count=1, gpus=4)
    assert _kubectl(pool.plane, "apply", "-f", "-", stdin=_policy_object(pool)).returncode == 0
    ledger = tmp_path / "ledger.db"
    daemon = _object_daemon(pool, ledger).start()
    wait_until(
        lambda: _when(pool, lambda o: _entitlements(o) == {"a": 8, "b": 4}), what="version 1"
    )
    with contextlib.closing(sqlite3.connect(ledger)) as db:
        # The table out of the way: every query of the audit history fails, as against
        # a database that is down.
        db.execute("ALTER TABLE policy_versions RENAME TO policy_versions_away")
        db.commit()
        applied = _kubectl(
            pool.plane, "apply", "-f", "-", stdin=_policy_object(pool, purchased={H100: 2})
        )
        assert applied.returncode == 0, applied.stderr
        obj = wait_until(
            lambda: _when(pool, lambda o: _ready(o).get("status") == "False"),
            what="Ready=False while generation 2 cannot be recorded",
        )
        ready = _ready(obj)
        assert (ready["reason"], ready["observedGeneration"]) == ("PolicyPending", 2), ready
        assert ready["message"].startswith("generation 2 not taken yet: OperationalError")
        assert "version 1 stays in force" in ready["message"]
        assert daemon.policy().version == 1
        db.execute("ALTER TABLE policy_versions_away RENAME TO policy_versions")
        db.commit()
    obj = wait_until(
        lambda: _when(pool, lambda o: _entitlements(o).get("a") == 10),
        timeout=60,
        what="generation 2 in force once the ledger answers",
    )
    assert obj["status"]["version"] == 2 and obj["status"]["generationInForce"] == 2
    assert (_ready(obj)["status"], _ready(obj)["reason"]) == ("True", "PolicyInForce")
    assert [v.version for v in AuditLog(f"sqlite:///{ledger}").list()] == [2, 1]


def test_a_null_kubectl_apply_drops_is_refused_naming_the_field(pool: Pool, tmp_path: Path) -> None:
    """`maxReclaimsPerJob: null` means no limit, but client-side `kubectl apply` removes
    a field set to null: the daemon put the default 3 in force without a word."""
    pool.add_member("a")
    pool.add_nodes("a", count=1, gpus=8)
    assert _kubectl(pool.plane, "apply", "-f", "-", stdin=_policy_object(pool)).returncode == 0
    daemon = _object_daemon(pool, tmp_path / "ledger.db").start()
    unlimited = yaml.safe_load(_policy_object(pool))
    unlimited["spec"]["sharing"]["maxReclaimsPerJob"] = None
    applied = _kubectl(pool.plane, "apply", "-f", "-", stdin=yaml.safe_dump(unlimited))
    assert applied.returncode == 0, applied.stderr
    assert "maxReclaimsPerJob" not in _object(pool)["spec"]["sharing"], "kubectl dropped it"
    obj = wait_until(
        lambda: _when(pool, lambda o: _ready(o).get("status") == "False"),
        what="Ready=False after the dropped null",
    )
    message = _ready(obj)["message"]
    # kubectl removed a field that was not there: the same generation, refused now.
    assert message.startswith(
        "generation 1 refused: spec.sharing.maxReclaimsPerJob: null in the applied document"
    ), message
    assert "kubectl apply --server-side" in message
    assert daemon.policy().version == 1

    # Server-side apply keeps the null: taken, no limit.
    applied = _kubectl(
        pool.plane,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        stdin=yaml.safe_dump(unlimited),
    )
    assert applied.returncode == 0, applied.stderr
    wait_until(lambda: daemon.policy().version == 2, what="version 2 in force")
    assert daemon.policy().sharing.max_reclaims_per_job is None

    # ApplyPolicy of a document without the field (the default 3) on an object whose
    # last kubectl apply said null: its own write is taken, not refused for that null.
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(TOKEN_FILE)
    api = Api(
        serve_daemon_api(
            daemon,
            pool.plane.scheduler,
            tokens=tokens,
            ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
            listen="127.0.0.1:0",
            max_workers=4,
        )
    )
    try:
        reply = api.policy.ApplyPolicy(
            policy_pb2.ApplyPolicyRequest(yaml=_policy_object(pool)), metadata=ADMIN
        )
        assert reply.applied.version == 3
        obj = wait_until(
            lambda: _when(pool, lambda o: o["status"]["observedGeneration"] == 3),
            what="the API's generation looked at",
        )
        assert _ready(obj)["status"] == "True", _ready(obj)
        assert daemon.policy().sharing.max_reclaims_per_job == 3
    finally:
        api.close()


def test_grpc_apply_policy_with_a_field_an_older_crd_lacks_changes_nothing(
    pool: Pool, tmp_path: Path, policy_crd: str
) -> None:
    """Helm never upgrades CRDs: with one older than the daemon, ApplyPolicy's write was
    pruned of the field the CRD does not declare, the call answered OK with a version the
    object did not hold, and the next restart recorded the object's policy over it."""
    extensions = k8s.ApiextensionsV1Api(pool.plane.admin)
    current = extensions.read_custom_resource_definition(policy_crd)
    original = copy.deepcopy(current)
    schema = current.spec.versions[0].schema.open_apiv3_schema
    del schema.properties["spec"].properties["sharing"].properties["headStart"]
    extensions.replace_custom_resource_definition(policy_crd, current)
    try:
        pool.add_member("a")
        pool.add_nodes("a", count=1, gpus=8)
        wait_until(
            lambda: (
                _kubectl(pool.plane, "apply", "-f", "-", stdin=_policy_object(pool)).returncode == 0
            ),
            what="the Policy object created under the older CRD",
        )
        ledger = tmp_path / "ledger.db"
        daemon = _object_daemon(pool, ledger).start()
        tokens = tmp_path / "tokens.yaml"
        tokens.write_text(TOKEN_FILE)
        api = Api(
            serve_daemon_api(
                daemon,
                pool.plane.scheduler,
                tokens=tokens,
                ledger_url=f"sqlite:///{ledger}",
                listen="127.0.0.1:0",
                max_workers=4,
            )
        )
        try:
            document = yaml.safe_load(_policy_object(pool))
            document["spec"]["sharing"]["headStart"] = True
            with pytest.raises(grpc.RpcError) as refused:
                api.policy.ApplyPolicy(
                    policy_pb2.ApplyPolicyRequest(yaml=yaml.safe_dump(document)), metadata=ADMIN
                )
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            details = refused.value.details() or ""
            assert 'unknown field "spec.sharing.headStart"' in details, details
            assert "nothing was changed" in details
            assert daemon.policy().version == 1 and not daemon.policy().sharing.head_start
            assert [v.version for v in AuditLog(f"sqlite:///{ledger}").list()] == [1]
        finally:
            api.close()
    finally:
        latest = extensions.read_custom_resource_definition(policy_crd)
        original.metadata.resource_version = latest.metadata.resource_version
        extensions.replace_custom_resource_definition(policy_crd, original)


def test_healthz_and_readyz_before_and_after_sync(pool: Pool, tmp_path: Path) -> None:
    pool.add_member("a")
    assert _kubectl(pool.plane, "apply", "-f", "-", stdin=_policy_object(pool)).returncode == 0
    lease = fast_lease(pool)
    first = _object_daemon(pool, tmp_path / "first.db", identity="first", **lease)
    port = first.metrics.serve(0, "127.0.0.1")
    base = f"http://127.0.0.1:{port}"
    assert _get(f"{base}/healthz") == (200, "ok\n")
    code, body = _get(f"{base}/readyz")
    assert code == 503 and "informer caches not synced" in body
    first.start()
    wait_until(lambda: first.is_leader, timeout=10, what="first leads")
    assert _get(f"{base}/readyz") == (200, "ready: leader\n")
    second = _object_daemon(pool, tmp_path / "second.db", identity="second", **lease)
    other = f"http://127.0.0.1:{second.metrics.serve(0, '127.0.0.1')}"
    second.start()
    time.sleep(1.0)
    assert _get(f"{other}/readyz") == (200, "ready: standby\n"), "a standby is ready too"
    code, text = _get(f"{base}/metrics")
    assert code == 200 and "fairpool_policy_version 1.0" in text
    assert _get(f"{base}/healthz")[0] == 200


def test_a_policy_refused_at_start_says_why_on_the_object(pool: Pool, tmp_path: Path) -> None:
    pool.add_member("a")
    bad = _policy_object(pool, purchased={"TPU-v9": 1})
    assert _kubectl(pool.plane, "apply", "-f", "-", stdin=bad).returncode == 0
    daemon = _object_daemon(pool, tmp_path / "ledger.db")
    with pytest.raises(InputError, match="unknown GPU model 'TPU-v9'"):
        daemon.start()
    obj = _object(pool)
    ready = _ready(obj)
    assert (ready["status"], ready["reason"]) == ("False", "PolicyRefused")
    assert "no policy in force" in ready["message"]
    assert obj["status"]["version"] == 0 and obj["status"]["observedGeneration"] == 1
    wait_until(
        lambda: [
            e
            for e in pool.core.list_namespaced_event("default").items
            if e.involved_object.name == pool.prefix and e.reason == "PolicyRefused"
        ],
        what="PolicyRefused event",
    )
