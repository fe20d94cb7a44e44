"""Pure conversion of Kubernetes API objects to snapshot types."""

from __future__ import annotations

from typing import Any, cast

import pytest

from policies.loader import load_policy
from scheduler.engine import schedule
from scheduler.engine.placement import effective_labels, labels_match
from scheduler.engine.snapshot import (
    PendingJob,
    PendingPod,
    PodSpec,
    SelectorRequirement,
    Snapshot,
    Taint,
    Toleration,
)
from scheduler.k8s.objects import (
    ConversionError,
    PodInfo,
    Priorities,
    milli,
    node_from_api,
    pending_jobs,
    pod_group_min_resources,
    pod_info,
    pod_spec_from_api,
    running_pod,
    timestamp,
    whole,
)
from tests.unit.engine_strategies import node as engine_node
from tests.unit.engine_strategies import policy as engine_policy
from tests.unit.engine_strategies import running as engine_running

POLICY = load_policy()  # the built-in demo: uni-north, lab-bio, ai-startup-*, physics


def pod(
    name: str = "p",
    namespace: str = "uni-north",
    gpus: str | int | None = 1,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    node: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": {"cpu": "500m", "memory": "1Gi"}}
    if gpus is not None:
        resources["limits"] = {"nvidia.com/gpu": str(gpus)}
    body: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "resourceVersion": "7",
            "creationTimestamp": "2026-11-28T10:00:00Z",
            "labels": labels or {},
            "annotations": annotations or {},
        },
        "spec": {
            "schedulerName": "fairpool",
            "containers": [{"name": "main", "resources": resources}],
            **spec,
        },
        "status": {"phase": "Pending"},
    }
    if node:
        body["spec"]["nodeName"] = node
    return body


@pytest.mark.parametrize(
    ("text", "m", "w"),
    [("500m", 500, 1), ("2", 2000, 2), ("1.5", 1500, 2), ("64Gi", 64 * 2**30 * 1000, 64 * 2**30)],
)
def test_quantities(text: str, m: int, w: int) -> None:
    assert milli(text, "x") == m
    assert whole(text, "x") == w


def test_bad_quantity_names_the_field() -> None:
    body = pod()
    body["spec"]["containers"] = [{"name": "c", "resources": {"requests": {"cpu": "lots"}}}]
    with pytest.raises(ConversionError, match=r"uni-north/p: spec.containers\[0\].resources.cpu"):
        pod_spec_from_api(body)


@pytest.mark.parametrize("text", ["NaN", "Inf", "-Infinity"])
def test_a_quantity_that_is_not_finite_names_the_field(text: str) -> None:
    # NaN was a decimal.InvalidOperation, infinity an OverflowError, out of the reader.
    with pytest.raises(ConversionError, match=f"x: not a finite quantity: '{text}'"):
        whole(text, "x")
    info = pod_info(pod(gpus=text))
    assert info.spec is None and "not a finite quantity" in (info.error or "")


@pytest.mark.parametrize("text", ["1e5000", "1e800000", "9223372036854775808", "8Ei"])
def test_a_quantity_beyond_what_the_api_server_holds_names_the_field(text: str) -> None:
    # A PodGroup's minResources are free text: "1e5000" raised a ValueError at every
    # cycle, "1e800000" held the cache for seconds, when made an integer.
    with pytest.raises(
        ConversionError, match=f"x: '{text}' is more than 9,223,372,036,854,775,807"
    ):
        whole(text, "x")
    assert whole("9223372036854775807", "x") == 2**63 - 1


def test_timestamp_is_utc_epoch() -> None:
    assert timestamp("1970-01-01T00:01:00Z") == 60.0
    assert timestamp(None) == 0.0


def test_node_from_api() -> None:
    node = node_from_api(
        {
            "metadata": {
                "name": "n1",
                "labels": {
                    "fairpool.io/owner": "physics",
                    "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
                    "topology.kubernetes.io/zone": "zone-a",
                },
            },
            "spec": {"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]},
            "status": {
                "allocatable": {
                    "nvidia.com/gpu": "8",
                    "cpu": "63500m",
                    "memory": "512Gi",
                    "pods": "110",
                },
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
    )
    assert node.owner == "physics"
    assert node.gpu_model == "NVIDIA-A100-SXM4-80GB"
    assert (node.gpus, node.cpu_milli, node.memory_bytes) == (8, 63500, 512 * 2**30)
    assert node.topology_domain == "zone-a"
    assert node.taints == (Taint("gpu", "yes", "NoSchedule"),)
    assert node.ready and not node.unschedulable


def test_node_topology_domain_label_wins_and_not_ready() -> None:
    node = node_from_api(
        {
            "metadata": {
                "name": "n",
                "labels": {
                    "fairpool.io/topology-domain": "rack-a",
                    "topology.kubernetes.io/zone": "z",
                },
            },
            "spec": {"unschedulable": True},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]},
        }
    )
    assert node.topology_domain == "rack-a"
    assert node.owner is None and node.gpus == 0
    assert not node.ready and node.unschedulable


def test_pod_spec_reads_requests_selector_affinity_tolerations() -> None:
    body = pod(
        gpus=4,
        nodeSelector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "disk": "ssd"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "rack", "operator": "In", "values": ["a"]}]},
                        {
                            "matchFields": [
                                {"key": "metadata.name", "operator": "In", "values": ["n1"]}
                            ]
                        },
                    ]
                }
            }
        },
    )
    spec = pod_spec_from_api(body)
    assert (spec.gpus, spec.cpu_milli, spec.memory_bytes) == (4, 500, 2**30)
    assert spec.gpu_model == "NVIDIA-H100-80GB-HBM3"
    assert spec.node_selector["disk"] == "ssd"
    assert spec.tolerations == (Toleration("gpu", "Exists", "", "NoSchedule"),)
    assert spec.affinity == (
        (SelectorRequirement("rack", "In", ("a",)),),
        (SelectorRequirement("kubernetes.io/hostname", "In", ("n1",)),),
    )


def test_unsupported_affinity_operator_is_a_clear_error() -> None:
    body = pod(
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["3"]}]}
                    ]
                }
            }
        }
    )
    info = pod_info(body)
    assert info.spec is None
    assert info.error is not None and "'Gt' is not supported" in info.error


def test_a_gpu_model_from_a_required_node_affinity_that_allows_only_it() -> None:
    def model(*terms: list[dict[str, Any]], **spec: Any) -> str | None:
        required = {"nodeSelectorTerms": [{"matchExpressions": list(t)} for t in terms]}
        affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
        return pod_spec_from_api(pod(affinity=affinity, **spec)).gpu_model

    def product(*values: str, operator: str = "In") -> dict[str, Any]:
        return {"key": "nvidia.com/gpu.product", "operator": operator, "values": list(values)}

    zone = {"key": "zone", "operator": "In", "values": ["a"]}
    # It was None: the job counted on every model, and its owner was refused a reclaim.
    assert model([product("NVIDIA-A100"), zone]) == "NVIDIA-A100"
    assert model([product("NVIDIA-A100", "NVIDIA-H100"), product("NVIDIA-A100")]) == "NVIDIA-A100"
    assert model([product("NVIDIA-A100")], [product("NVIDIA-A100"), zone]) == "NVIDIA-A100"
    assert model([product("NVIDIA-A100")], []) == "NVIDIA-A100"  # the empty term matches none
    assert model([product("NVIDIA-A100", "NVIDIA-H100")]) is None
    assert model([product("NVIDIA-A100")], [product("NVIDIA-H100")]) is None
    assert model([product("NVIDIA-A100")], [zone]) is None
    assert model([product("NVIDIA-A100", operator="NotIn")]) is None
    selected = {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100"}}
    assert model([product("NVIDIA-A100")], **selected) == "NVIDIA-H100"


def test_an_owner_who_names_its_model_by_affinity_reclaims_its_gpus() -> None:
    a100 = "NVIDIA-A100"
    policy = engine_policy(["lab-a", "lab-b"])
    nodes = [engine_node("a", "lab-a", model=a100), engine_node("h", "lab-b", model="NVIDIA-H100")]
    borrowed = [engine_running(f"b{i}", "lab-b", "a") for i in range(8)]
    term = {
        "matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": [a100]}]
    }
    body = pod(
        namespace="lab-a",
        gpus=2,
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
            }
        },
    )
    spec = pod_spec_from_api(body)
    waiting = PendingJob(
        job_id="j",
        member="lab-a",
        pods=(PendingPod(uid="j-0", name="j-0", namespace="lab-a", spec=spec),),
    )
    decisions = schedule(
        Snapshot(now=1e5, nodes=tuple(nodes), running=tuple(borrowed), pending=(waiting,)), policy
    )
    assert len(decisions.preemptions) == 2, decisions.explanations["j"]


def test_a_pod_with_resource_claims_waits_saying_fairpool_allocates_none() -> None:
    claims = {"resourceClaims": [{"name": "gpu", "resourceClaimName": "my-claim"}]}
    info = pod_info(pod(**claims))
    # It was bound (even with no such claim), and a kubelet starts no pod whose claim
    # is not allocated.
    assert info.spec is None and info.error is not None
    assert "spec.resourceClaims[0] (gpu)" in info.error
    _, rejected = pending_jobs([info], POLICY, Priorities(), {}, {})
    assert [r.reason for r in rejected] == [info.error]
    bound = pod_info(pod(node="n1", **claims) | {"status": {"phase": "Running"}})
    assert bound.spec is not None and bound.spec.gpus == 1  # its requests still count


def _asking(resources: dict[str, Any], where: str = "containers") -> dict[str, Any]:
    """A pod whose first container (or init container, or the pod itself: `where`
    "resources") asks for `resources` besides its GPU."""
    body = pod()
    if where == "resources":
        body["spec"]["resources"] = resources
    elif where == "initContainers":
        body["spec"]["initContainers"] = [{"name": "init", "resources": resources}]
    else:
        body["spec"]["containers"][0]["resources"]["limits"].update(resources)
    return body


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (_asking({"rdma/ib": "1"}), "spec.containers[0].resources: rdma/ib"),
        (_asking({"nvidia.com/mig-1g.10gb": "1"}), "resources: nvidia.com/mig-1g.10gb"),
        (
            _asking({"requests": {"hugepages-2Mi": "1Gi", "memory": "1Gi"}}, "initContainers"),
            "spec.initContainers[0].resources: hugepages-2Mi",
        ),
        (
            _asking({"limits": {"hugepages-1Gi": "2Gi", "memory": "4Gi"}}, "resources"),
            "spec.resources: hugepages-1Gi",
        ),
    ],
)
def test_a_pod_asking_for_a_resource_fairpool_does_not_count_waits_naming_it(
    body: dict[str, Any], named: str
) -> None:
    # It was bound to a node with none of it (kube-scheduler: "Insufficient rdma/ib"; a
    # kubelet refuses it: OutOfrdma/ib).
    info = pod_info(body)
    assert info.spec is None and info.error is not None
    assert named in info.error and "fairpool does not place pods that request" in info.error
    _, rejected = pending_jobs([info], POLICY, Priorities(), {}, {})
    assert [r.reason for r in rejected] == [info.error]
    bound = pod_info(body | {"spec": {**body["spec"], "nodeName": "n1"}})
    assert bound.spec is not None and bound.spec.gpus == 1  # its requests still count


def test_ephemeral_storage_is_not_counted_and_keeps_no_pod_waiting() -> None:
    # Most charts ask for some; refused, all their pods waited (docs/policy.md).
    info = pod_info(_asking({"ephemeral-storage": "100Ti"}))
    assert info.error is None and info.spec is not None and info.spec.gpus == 1


def test_a_zero_request_of_another_resource_asks_for_nothing() -> None:
    info = pod_info(_asking({"rdma/ib": "0", "ephemeral-storage": "0"}))
    assert info.error is None and info.spec is not None and info.spec.gpus == 1


def test_an_unreadable_quantity_of_another_resource_names_its_field() -> None:
    info = pod_info(_asking({"rdma/ib": "lots"}))
    assert info.error is not None
    assert "spec.containers[0].resources.limits[rdma/ib]: not a quantity" in info.error


def test_an_empty_node_selector_term_matches_no_node() -> None:
    node = node_from_api(
        {
            "metadata": {"name": "n1", "labels": {"zone": "a"}},
            "status": {"allocatable": {"nvidia.com/gpu": "8", "cpu": "8", "memory": "8Gi"}},
        }
    )
    labels = effective_labels(node)
    required = {"nodeSelectorTerms": [{}, {"matchExpressions": []}]}
    body = pod(
        affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    )
    # kube-scheduler: "didn't match Pod's node affinity/selector"; it matched every node.
    assert not labels_match(pod_spec_from_api(body), labels)
    required["nodeSelectorTerms"].append(
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
    )
    assert labels_match(pod_spec_from_api(body), labels)


def test_init_containers_and_sidecars() -> None:
    body = pod(gpus=1)
    body["spec"]["initContainers"] = [
        {"name": "big-init", "resources": {"requests": {"cpu": "4", "nvidia.com/gpu": "2"}}},
        {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"cpu": "1"}}},
    ]
    body["spec"]["overhead"] = {"cpu": "100m"}
    spec = pod_spec_from_api(body)
    # app (0.5 cpu, 1 gpu) + sidecar (1 cpu) vs plain init alone (4 cpu, 2 gpu): max per resource
    assert spec.cpu_milli == 4000 + 100
    assert spec.gpus == 2


def test_pod_level_resources_replace_the_containers_cpu_and_memory() -> None:
    body = pod(gpus=2)  # its container asks 500m CPU and 1Gi
    body["spec"]["resources"] = {"requests": {"cpu": "4", "memory": "8Gi"}}
    body["spec"]["overhead"] = {"cpu": "100m"}
    spec = pod_spec_from_api(body)
    # As kube-scheduler counts it (it refused such a pod a 2-CPU node fairpool bound).
    assert (spec.gpus, spec.cpu_milli, spec.memory_bytes) == (2, 4100, 8 * 2**30)
    body["spec"]["resources"] = {"limits": {"memory": "2Gi"}}
    spec = pod_spec_from_api(body)
    assert (spec.cpu_milli, spec.memory_bytes) == (600, 2 * 2**30)
    body["spec"]["resources"] = {"requests": {"cpu": "lots"}}
    with pytest.raises(ConversionError, match=r"uni-north/p: spec.resources.cpu"):
        pod_spec_from_api(body)


def test_pod_info_states() -> None:
    pending = pod_info(pod())
    assert pending.waits_for("fairpool") and not pending.takes_resources()
    bound = pod_info(pod(node="n1") | {"status": {"phase": "Running"}})
    assert bound.takes_resources() and not bound.waits_for("fairpool")
    done = pod_info(pod(node="n1") | {"status": {"phase": "Succeeded"}})
    assert not done.takes_resources()
    other = pod_info(pod(schedulerName="default-scheduler"))
    assert not other.waits_for("fairpool")
    deleting = pod(name="d")
    deleting["metadata"]["deletionTimestamp"] = "2026-11-28T10:00:05Z"
    assert not pod_info(deleting).waits_for("fairpool")


def test_priority_from_spec_then_class_then_global_default() -> None:
    priorities = Priorities.from_api(
        [
            {"metadata": {"name": "high"}, "value": 1000},
            {"metadata": {"name": "normal"}, "value": 10, "globalDefault": True},
        ]
    )
    assert priorities.of(pod_info(pod(priority=5))) == 5
    assert priorities.of(pod_info(pod(priorityClassName="high"))) == 1000
    assert priorities.of(pod_info(pod())) == 10


def test_single_pods_become_jobs_with_member_from_namespace() -> None:
    infos = [pod_info(pod("a", "uni-north")), pod_info(pod("b", "ai-startup-x", gpus=2))]
    jobs, rejected = pending_jobs(infos, POLICY, Priorities(), {}, {})
    assert rejected == ()
    assert {(j.job_id, j.member, j.min_member, j.gpus) for j in jobs} == {
        ("uid-a", "uni-north", 1, 1),
        ("uid-b", "ai-startup", 1, 2),
    }


def _gang_pods(sizes: list[str]) -> list[PodInfo]:
    """Pods of physics' gang `train`, each declaring its size in the annotation."""
    return [
        pod_info(
            pod(
                f"w{i}",
                "physics",
                labels={"fairpool.io/gang": "train"},
                annotations={"fairpool.io/gang-size": size},
            )
        )
        for i, size in enumerate(sizes)
    ]


def test_gang_by_label_and_annotation() -> None:
    infos = _gang_pods(["4"] * 3)
    nominations = {"physics/train": {"uid-w0": "n1"}}
    jobs, _ = pending_jobs(infos, POLICY, Priorities(), {}, nominations)
    (job,) = jobs
    assert job.job_id == "physics/train" and job.is_gang and job.min_member == 4
    assert len(job.pods) == 3 and job.gpus == 3
    assert job.nominated_nodes == {"uid-w0": "n1"}


def test_pods_of_one_gang_that_declare_different_sizes_wait_saying_so() -> None:
    # The oldest pod's size was taken without a word (a typo in one manifest).
    infos = _gang_pods(["4", "2", "4"])
    jobs, rejected = pending_jobs(infos, POLICY, Priorities(), {}, {})
    assert jobs == ()
    (bad,) = rejected
    assert bad.reason == (
        "gang train: its pods declare different sizes in fairpool.io/gang-size (2, 4); "
        "give every pod the same"
    )


@pytest.mark.parametrize(
    "extra",
    [
        {"labels": {"fairpool.io/gang": "g"}, "annotations": {"fairpool.io/gang-size": "abc"}},
        {"labels": {"fairpool.io/gang": "g"}},
        {
            "schedulerName": "default-scheduler",
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "g", "operator": "Gt", "values": ["3"]}]}
                        ]
                    }
                }
            },
        },
    ],
    ids=["bad-gang-size", "gang-without-size", "affinity-gt"],
)
def test_a_bound_pod_keeps_its_requests_when_the_rest_cannot_be_read(
    extra: dict[str, Any],
) -> None:
    # Its GPUs counted 0: the node looked free and the engine bound 8 more GPUs onto it.
    labels, annotations = extra.pop("labels", None), extra.pop("annotations", None)
    body = pod("big", gpus=8, labels=labels, annotations=annotations, node="n1", **extra)
    body["status"]["phase"] = "Running"
    info = pod_info(body)
    assert info.spec is not None and info.spec.gpus == 8 and info.error is None
    assert info.spec.cpu_milli == 500
    # Pending, the same pod is held, the problem named.
    del body["spec"]["nodeName"]
    body["status"]["phase"] = "Pending"
    assert pod_info(body).spec is None and pod_info(body).error


def test_a_gang_whose_pods_require_different_gpu_models_waits_saying_so() -> None:
    gang = {"fairpool.io/gang": "mix"}
    size = {"fairpool.io/gang-size": "3"}

    def member(name: str, gpus: int, model: str | None) -> PodInfo:
        selector = {"nvidia.com/gpu.product": model} if model else {}
        return pod_info(pod(name, gpus=gpus, labels=gang, annotations=size, nodeSelector=selector))

    pods = [member("w0", 1, "NVIDIA-H100"), member("w1", 1, "NVIDIA-A100"), member("w2", 1, None)]
    jobs, rejected = pending_jobs(pods, POLICY, Priorities(), {}, {})
    # It was queued, and waited for ever "scattered over nodes too small for the gang".
    assert jobs == ()
    (why,) = rejected
    assert "NVIDIA-A100, NVIDIA-H100" in why.reason and len(why.pods) == 3
    # One model named, or the others only by pods that ask no GPU of a CPU-only gang.
    same = [member("w0", 1, "NVIDIA-H100"), member("w1", 1, None), member("w2", 1, "NVIDIA-H100")]
    assert pending_jobs(same, POLICY, Priorities(), {}, {})[1] == ()
    cpu = [member("w0", 0, "NVIDIA-H100"), member("w1", 0, "NVIDIA-A100"), member("w2", 0, None)]
    assert pending_jobs(cpu, POLICY, Priorities(), {}, {})[1] == ()


def test_gang_label_without_size_is_rejected_with_reason() -> None:
    info = pod_info(pod("w", "physics", labels={"fairpool.io/gang": "train"}))
    assert info.error is not None and "fairpool.io/gang-size" in info.error
    jobs, rejected = pending_jobs([info], POLICY, Priorities(), {}, {})
    assert jobs == () and "fairpool.io/gang-size" in rejected[0].reason


@pytest.mark.parametrize("size", ["0", "-2", "x", "１６", "1_6", " 16", "16 ", "9" * 5000])
def test_a_gang_size_is_plain_digits(size: str) -> None:
    """What `int` reads besides ASCII digits (full-width digits, underscores, spaces) is
    not a size a user meant: the pod is held with the annotation named."""
    labels = {"fairpool.io/gang": "train"}
    info = pod_info(pod("w", "physics", labels=labels, annotations={"fairpool.io/gang-size": size}))
    assert info.error is not None and "is not a positive integer" in info.error, size


@pytest.mark.parametrize("labels", [{}, {"fairpool.io/gang": ""}], ids=["no-label", "empty"])
def test_a_gang_size_without_a_gang_keeps_the_pod_waiting_saying_so(
    labels: dict[str, str],
) -> None:
    info = pod_info(pod(labels=labels, annotations={"fairpool.io/gang-size": "4"}))
    jobs, rejected = pending_jobs([info], POLICY, Priorities(), {}, {})
    # It was placed alone, as a job of one pod.
    assert jobs == ()
    (why,) = rejected
    assert "fairpool.io/gang-size='4'" in why.reason and "fairpool.io/gang" in why.reason
    one = pod_info(pod(annotations={"fairpool.io/gang-size": "1"}))
    jobs, rejected = pending_jobs([one], POLICY, Priorities(), {}, {})
    assert [j.min_member for j in jobs] == [1] and rejected == ()


def test_pod_group_min_member_from_podgroup_else_annotation() -> None:
    labels = {"scheduling.x-k8s.io/pod-group": "pg"}
    infos = [pod_info(pod("a", "physics", labels=labels))]
    jobs, _ = pending_jobs(infos, POLICY, Priorities(), {"physics/pg": 3}, {})
    assert jobs[0].min_member == 3
    annotated = [
        pod_info(pod("a", "physics", labels=labels, annotations={"fairpool.io/gang-size": "2"}))
    ]
    jobs, _ = pending_jobs(annotated, POLICY, Priorities(), {}, {})
    assert jobs[0].min_member == 2
    jobs, rejected = pending_jobs(infos, POLICY, Priorities(), {}, {})
    assert jobs == () and "gang size is unknown" in rejected[0].reason


def test_namespace_of_no_member_is_rejected() -> None:
    jobs, rejected = pending_jobs([pod_info(pod(namespace="stray"))], POLICY, Priorities(), {}, {})
    assert jobs == () and "'stray' belongs to no member" in rejected[0].reason


def test_running_pod_member_from_bind_annotation_and_foreign_scheduler() -> None:
    body = pod(
        namespace="stray",
        node="n1",
        annotations={"fairpool.io/member": "physics"},
        schedulerName="default-scheduler",
    )
    body["status"] = {"phase": "Running", "startTime": "1970-01-01T00:00:10Z"}
    running = running_pod(pod_info(body), POLICY, Priorities())
    # fairpool never bound it: the annotation is its user's, who could count its GPUs as
    # any member's (they counted for physics); its namespace belongs to no member.
    assert running.member is None and running.node == "n1"
    assert running.started_at == 10.0 and not running.scheduled_by_fairpool
    body["spec"]["schedulerName"] = "fairpool"
    assert running_pod(pod_info(body), POLICY, Priorities()).member == "physics"


def test_a_bound_pod_the_kubelet_has_not_started_runs_since_its_bind() -> None:
    """Created at 0, bound at 7,200 (PodScheduled), no startTime yet: it has run since
    7,200 for the minimum runtime and the work a reclaim loses, not since it was created
    two hours before (it would have been a victim the moment it was bound)."""
    body = pod(node="n1")
    body["metadata"]["creationTimestamp"] = "1970-01-01T00:00:00Z"
    body["status"] = {
        "phase": "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "1970-01-01T02:00:00Z"}
        ],
    }
    assert running_pod(pod_info(body), POLICY, Priorities()).started_at == 7200.0
    body["status"]["startTime"] = "1970-01-01T02:00:03Z"
    assert running_pod(pod_info(body), POLICY, Priorities()).started_at == 7203.0
    del body["status"]["conditions"], body["status"]["startTime"]
    assert running_pod(pod_info(body), POLICY, Priorities()).started_at == 0.0  # nothing else


def _gang_carrying(annotation: str, values: tuple[str, ...]) -> list[PodInfo]:
    """One physics gang, its i-th pod carrying `values[i]` in `annotation`."""
    return [
        pod_info(
            pod(
                f"w{i}",
                "physics",
                labels={"fairpool.io/gang": "train"},
                annotations={"fairpool.io/gang-size": str(len(values)), annotation: value},
            )
        )
        for i, value in enumerate(values)
    ]


def test_reclaim_count_from_the_annotation_on_running_and_pending_pods() -> None:
    infos = _gang_carrying("fairpool.io/reclaims", ("2", "1"))
    jobs, _ = pending_jobs(infos, POLICY, Priorities(), {}, {})
    assert jobs[0].reclaims == 2  # the most any of its pods carries
    (single,), _ = pending_jobs([pod_info(pod("s"))], POLICY, Priorities(), {}, {})
    assert single.reclaims == 0
    for unreadable in ("x", "²", "٣", "9" * 5000, "-1", " 3"):
        body = pod(node="n1", annotations={"fairpool.io/reclaims": unreadable})
        body["status"] = {"phase": "Running"}
        assert running_pod(pod_info(body), POLICY, Priorities()).reclaims == 0, unreadable
    body = pod(node="n1", annotations={"fairpool.io/reclaims": "3"})
    body["status"] = {"phase": "Running"}
    assert running_pod(pod_info(body), POLICY, Priorities()).reclaims == 3


def test_reclaim_time_from_the_annotation_beside_the_count() -> None:
    """The latest time any pod of the job carries; an unreadable one is ignored like an
    unreadable count, and a pod without one has none."""
    times = ("2027-01-15T08:00:00Z", "2027-01-15T09:30:00+01:00", "yesterday")
    infos = _gang_carrying("fairpool.io/reclaimed-at", times)
    jobs, rejected = pending_jobs(infos, POLICY, Priorities(), {}, {})
    assert not rejected
    assert jobs[0].reclaimed_at == 1_800_000_000.0 + 1800  # 08:30 UTC, the later one
    (single,), _ = pending_jobs([pod_info(pod("s"))], POLICY, Priorities(), {}, {})
    assert single.reclaimed_at is None
    for bad in ("x", "", "2027-01-15T08:00:00", "2027-13-01T00:00:00Z", "1800000000"):
        info = pod_info(pod("b", annotations={"fairpool.io/reclaimed-at": bad}))
        assert info.reclaimed_at is None, bad
        (job,), rejected = pending_jobs([info], POLICY, Priorities(), {}, {})
        assert job.reclaimed_at is None and not rejected


def test_pod_group_min_resources_holds_the_gang_until_its_pods_ask_that_much() -> None:
    labels = {"scheduling.x-k8s.io/pod-group": "pg"}
    infos = [pod_info(pod(f"w{k}", "physics", labels=labels)) for k in range(2)]
    asked = sum(cast(PodSpec, i.spec).gpus for i in infos)
    group = {
        "metadata": {"namespace": "physics", "name": "pg"},
        "spec": {"minMember": 2, "minResources": {"nvidia.com/gpu": str(asked + 8)}},
    }
    need = pod_group_min_resources(group)
    assert need is not None and need.gpus == asked + 8
    jobs, rejected = pending_jobs(
        infos, POLICY, Priorities(), {"physics/pg": 2}, {}, {"physics/pg": need}
    )
    assert jobs == ()
    assert f"nvidia.com/gpu {asked} of {asked + 8}" in rejected[0].reason
    assert "waits for the rest of its pods" in rejected[0].reason
    enough = pod_group_min_resources(
        {**group, "spec": {"minResources": {"nvidia.com/gpu": str(asked), "cpu": "100m"}}}
    )
    jobs, rejected = pending_jobs(
        infos, POLICY, Priorities(), {"physics/pg": 2}, {}, {"physics/pg": enough}
    )
    assert rejected == () and jobs[0].min_member == 2
    assert pod_group_min_resources({"spec": {"minMember": 2}}) is None
    with pytest.raises(ConversionError, match=r"PodGroup ns/pg: spec.minResources\.memory"):
        pod_group_min_resources(
            {
                "metadata": {"namespace": "ns", "name": "pg"},
                "spec": {"minResources": {"memory": "lots"}},
            }
        )
    jobs, rejected = pending_jobs(
        infos,
        POLICY,
        Priorities(),
        {"physics/pg": 2},
        {},
        {"physics/pg": "PodGroup physics/pg: spec.minResources.memory: not a quantity: 'lots'"},
    )
    assert jobs == () and "not a quantity" in rejected[0].reason


def test_checkpointable_from_the_annotation_on_running_and_pending_pods() -> None:
    key = "fairpool.io/checkpointable"
    (job,), _ = pending_jobs([pod_info(pod("s"))], POLICY, Priorities(), {}, {})
    assert job.checkpointable is None  # its member decides
    for text, value in (("true", True), ("False", False), (" TRUE ", True)):
        info = pod_info(pod("s", annotations={key: text}))
        (job,), _ = pending_jobs([info], POLICY, Priorities(), {}, {})
        assert (info.checkpointable, job.checkpointable) == (value, value)
        bound = pod_info(pod("r", node="n1", annotations={key: text}))
        assert running_pod(bound, POLICY, Priorities()).checkpointable is value
    # A gang resumes only if every pod does; pods that say nothing leave it to the member.
    gang = {"fairpool.io/gang": "g"}

    def gang_job(*texts: str | None) -> bool | None:
        infos = [
            pod_info(
                pod(
                    f"g{k}",
                    labels=gang,
                    annotations={"fairpool.io/gang-size": str(len(texts))}
                    | ({key: t} if t is not None else {}),
                )
            )
            for k, t in enumerate(texts)
        ]
        (job,), _ = pending_jobs(infos, POLICY, Priorities(), {}, {})
        return job.checkpointable

    assert gang_job("true", "true") is True
    assert gang_job("true", None) is None
    assert gang_job("true", "false") is False
    assert gang_job(None, "false") is False


def test_an_unreadable_checkpointable_annotation_holds_a_pending_pod_not_a_running_one() -> None:
    bad = {"fairpool.io/checkpointable": "yes"}
    infos = [pod_info(pod("s", annotations=bad))]
    jobs, rejected = pending_jobs(infos, POLICY, Priorities(), {}, {})
    assert jobs == ()
    assert rejected[0].reason == (
        "pod uni-north/s: annotation fairpool.io/checkpointable='yes' is neither 'true' nor 'false'"
    )
    running = running_pod(pod_info(pod("r", node="n1", annotations=bad)), POLICY, Priorities())
    assert (running.spec.gpus, running.checkpointable) == (1, None)
