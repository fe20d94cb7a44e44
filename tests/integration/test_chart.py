"""The Helm chart lints and renders what an install needs, for each value set in
tests/data/chart: no API arguments without tokens, the NetworkPolicy, monitoring objects
only where the Prometheus Operator is served (or asked for), the ledger from a Secret or
on a volume, and RBAC without wildcards."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart import (
    CHART,
    MONITORING_API,
    RELEASE,
    VALUE_SETS,
    HelmError,
    container,
    one,
    policy_values,
    render,
    run_helm,
    value_args,
)

pytestmark = pytest.mark.integration

SETS = sorted(p.stem for p in VALUE_SETS.glob("*.yaml"))
SCHEDULER = "fairpool-scheduler"
METER = "fairpool-meter"


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return policy_values(tmp_path_factory.mktemp("chart"))


def _render(policy: Path, value_set: str, **kwargs: Any) -> list[dict[str, Any]]:
    return render([policy, VALUE_SETS / f"{value_set}.yaml"], **kwargs)


def _env(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(deployment).get("env", [])}


def test_the_value_sets_are_the_ones_this_test_checks() -> None:
    assert SETS == ["full", "minimal", "no-tokens", "postgres"]


@pytest.mark.parametrize("value_set", SETS)
def test_chart_lints_clean(policy: Path, value_set: str) -> None:
    out = run_helm(
        "lint", "--strict", str(CHART), *value_args([policy, VALUE_SETS / f"{value_set}.yaml"])
    )
    assert "0 chart(s) failed" in out


def test_minimal_install_runs_both_workloads_without_api_or_monitoring(policy: Path) -> None:
    objects = _render(policy, "minimal")
    scheduler = one(objects, "Deployment", SCHEDULER)
    assert scheduler["spec"]["replicas"] == 2
    pod = scheduler["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == SCHEDULER
    args = container(scheduler)["args"]
    assert args[:2] == ["run", "--in-cluster"]
    assert "--leader-elect" in args and f"--lease-name={SCHEDULER}" in args
    assert "--policy-object=fairpool" in args
    # The tokens Secret is not given: the API is off, nothing refers to the Secret.
    assert not [a for a in args if a.startswith(("--tokens", "--api-listen", "--tls-"))]
    assert {p["name"] for p in container(scheduler)["ports"]} == {"metrics"}
    assert not [v for v in pod["volumes"] if "secret" in v]
    probes = container(scheduler)
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["readinessProbe"]["httpGet"]["port"] == "metrics"

    # Its own priority class: system-cluster-critical pods outside kube-system are refused
    # by GKE (and any cluster whose ResourceQuota does not admit them).
    assert pod["priorityClassName"] == SCHEDULER
    assert one(objects, "PriorityClass", SCHEDULER)["value"] == 1_000_000_000
    given = _render(policy, "minimal", sets=["scheduler.priorityClassName=system-cluster-critical"])
    pod_given = one(given, "Deployment", SCHEDULER)["spec"]["template"]["spec"]
    assert pod_given["priorityClassName"] == "system-cluster-critical"
    assert not [o for o in given if o["kind"] == "PriorityClass"]

    meter = one(objects, "Deployment", METER)
    meter_pod = meter["spec"]["template"]["spec"]
    # Alive while the process answers: a failed run (Prometheus down) is not a restart.
    assert container(meter)["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container(meter)["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert meter_pod["serviceAccountName"] == METER
    assert meter_pod["automountServiceAccountToken"] is False
    meter_args = container(meter)["args"]
    assert meter_args[:2] == ["meter", "--watch"]
    assert "--reports-dir=/var/lib/fairpool/reports" in meter_args
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in meter_pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"fairpool-reports", "fairpool-ledger"}
    assert {o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim"} == {
        "fairpool-reports",
        "fairpool-ledger",
    }
    # SQLite on one ReadWriteOnce volume: every pod mounting it lands on its node.
    for deployment in (scheduler, meter):
        affinity = deployment["spec"]["template"]["spec"]["affinity"]["podAffinity"]
        term = affinity["requiredDuringSchedulingIgnoredDuringExecution"][0]
        assert term["labelSelector"]["matchLabels"]["fairpool.io/ledger-volume"] == "true"
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["fairpool.io/ledger-volume"] == "true"
        assert _env(deployment)["FAIRPOOL_LEDGER"]["value"].startswith("sqlite:////var/lib/")

    kinds = {o["kind"] for o in objects}
    assert not kinds & {"PodMonitor", "PrometheusRule", "Certificate"}
    assert {"NetworkPolicy", "Service", "Policy", "CustomResourceDefinition"} <= kinds
    service = one(objects, "Service")
    assert {p["name"] for p in service["spec"]["ports"]} == {"metrics"}
    dashboard = one(objects, "ConfigMap", "fairpool-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["fairpool.json"])["uid"].startswith("fairpool-")


def _dashboard(policy: Path, release: str, namespace: str, **kwargs: Any) -> dict[str, Any]:
    objects = render([policy], release=release, namespace=namespace, **kwargs)
    configmap = [o for o in objects if o["metadata"]["name"].endswith("-dashboard")]
    assert len(configmap) == 1
    dashboard: dict[str, Any] = json.loads(configmap[0]["data"]["fairpool.json"])
    return dashboard


def test_two_releases_dashboards_have_their_own_grafana_uid_and_title(policy: Path) -> None:
    # Grafana keys dashboards by uid: a shared one made one release's dashboard replace
    # the other's. Releases of one name in two namespaces, and a long release name.
    releases = [("fairpool", "pool-a"), ("fairpool", "pool-b"), ("x" * 53, "pool-a")]
    dashboards = [_dashboard(policy, release, namespace) for release, namespace in releases]
    uids = [d["uid"] for d in dashboards]
    assert len(set(uids)) == len(uids), uids
    assert all(len(uid) <= 40 for uid in uids), uids  # Grafana's limit
    titles = [d["title"] for d in dashboards]
    assert len(set(titles)) == len(titles), titles  # Grafana refuses two of one folder
    assert titles[0] == "fairpool (pool-a/fairpool)"
    # Each opens on its own release's namespace (its queries read the namespace the
    # variable names); the rest is the chart's file as it is.
    source = json.loads((CHART / "files" / "dashboard.json").read_text())
    for dashboard, (_, namespace) in zip(dashboards, releases, strict=True):
        variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "namespace")
        assert variable.pop("current") == {"text": namespace, "value": namespace}
        assert {k: v for k, v in dashboard.items() if k not in ("uid", "title")} == {
            k: v for k, v in source.items() if k not in ("uid", "title")
        }
    # An existing dashboard's URL (/d/fairpool) can be kept.
    kept = _dashboard(policy, "fairpool", "pool-a", sets=["grafana.dashboard.uid=fairpool"])
    assert kept["uid"] == "fairpool"


def test_claims_rendered_without_a_cluster_are_ordinary_objects_not_hooks(policy: Path) -> None:
    # Argo CD renders with `helm template` and deletes and makes again a hook at each
    # sync (BeforeHookCreation by default): a claim made a hook there lost the ledger.
    # Installed by Helm, they are hooks (tests/integration/test_chart_life.py).
    claims = [o for o in _render(policy, "minimal") if o["kind"] == "PersistentVolumeClaim"]
    assert len(claims) == 2
    for claim in claims:
        annotations = claim["metadata"]["annotations"]
        assert annotations == {"helm.sh/resource-policy": "keep"}, annotations


def test_policy_object_carries_the_given_spec_and_the_meter_reads_the_same(policy: Path) -> None:
    objects = _render(policy, "minimal")
    spec = yaml.safe_load(policy.read_text())["policy"]["spec"]
    policy_object = one(objects, "Policy")
    assert policy_object["apiVersion"] == "fairpool.io/v1"
    assert policy_object["spec"] == spec
    file = yaml.safe_load(one(objects, "ConfigMap", "fairpool-meter-policy")["data"]["policy.yaml"])
    assert file["spec"] == spec
    from policies.loader import parse_policy

    parsed = parse_policy(one(objects, "ConfigMap", "fairpool-meter-policy")["data"]["policy.yaml"])
    assert [m.name for m in parsed.members] == [m["name"] for m in spec["members"]]


def test_network_policy_opens_only_the_configured_ports_to_the_configured_peers(
    policy: Path,
) -> None:
    closed = _render(policy, "no-tokens")
    rules = one(closed, "NetworkPolicy")["spec"]["ingress"]
    assert [[p["port"] for p in r["ports"]] for r in rules] == [[9464]]
    assert rules[0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    full = _render(policy, "full")
    network = one(full, "NetworkPolicy")
    assert network["spec"]["policyTypes"] == ["Ingress"]
    by_port = {r["ports"][0]["port"]: r["from"] for r in network["spec"]["ingress"]}
    assert set(by_port) == {50051, 9464}
    assert {"ipBlock": {"cidr": "10.20.0.0/16"}} in by_port[50051]
    # Every rule names its peers: a rule without `from` would admit every source.
    assert all(r.get("from") for r in network["spec"]["ingress"])
    shut = _render(policy, "full", sets=["networkPolicy.metricsFrom=null"])
    assert [r["ports"][0]["port"] for r in one(shut, "NetworkPolicy")["spec"]["ingress"]] == [50051]


def test_full_install_serves_the_api_over_tls_with_a_postgres_ledger(policy: Path) -> None:
    objects = _render(policy, "full")
    scheduler = one(objects, "Deployment", SCHEDULER)
    args = container(scheduler)["args"]
    assert "--tokens=/etc/fairpool/api/tokens.yaml" in args
    assert "--tls-cert=/etc/fairpool/tls/tls.crt" in args
    assert "--tls-key=/etc/fairpool/tls/tls.key" in args
    secrets = {
        v["secret"]["secretName"]
        for v in scheduler["spec"]["template"]["spec"]["volumes"]
        if "secret" in v
    }
    certificate = one(objects, "Certificate")
    assert secrets == {"fairpool-api-tokens", certificate["spec"]["secretName"], "fairpool-ledger"}
    assert "fairpool.fairpool-system.svc" in certificate["spec"]["dnsNames"]
    assert {"PodMonitor", "PrometheusRule"} <= {o["kind"] for o in objects}
    assert one(objects, "PodMonitor")["metadata"]["labels"]["release"] == "prometheus"
    service = one(objects, "Service")
    assert {p["name"] for p in service["spec"]["ports"]} == {"grpc", "metrics"}


def test_postgres_ledger_comes_from_the_secret_and_no_ledger_volume(policy: Path) -> None:
    objects = _render(policy, "postgres")
    for name in (SCHEDULER, METER):
        deployment = one(objects, "Deployment", name)
        assert "FAIRPOOL_LEDGER" not in _env(deployment)
        assert "podAffinity" not in deployment["spec"]["template"]["spec"].get("affinity", {})
    claims = {o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim"}
    assert claims == {"fairpool-reports"}


def test_a_rotated_ledger_secret_reaches_every_reader_without_a_restart(policy: Path) -> None:
    # An environment variable is set once, when a pod starts: with the URL in one, a
    # rotated password reached running pods only when they restarted. Mounted, the file
    # is refreshed by the kubelet (never under a subPath) and read for each connection.
    objects = _render(policy, "postgres", sets=["ledger.secretKey=database-url"])
    readers = set()
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        secret = {
            name: v["secret"]
            for name, v in volumes.items()
            if v.get("secret", {}).get("secretName") == "fairpool-ledger"
        }
        if not secret:
            continue
        readers.add(deployment["metadata"]["name"])
        [(volume, source)] = secret.items()
        assert source["items"] == [{"key": "database-url", "path": "url"}]
        [mount] = [m for m in container(deployment)["volumeMounts"] if m["name"] == volume]
        assert "subPath" not in mount
        assert mount["readOnly"] is True
        env = _env(deployment)
        assert env["FAIRPOOL_LEDGER_URL_FILE"]["value"] == f"{mount['mountPath']}/url"
        assert not any("secretKeyRef" in str(e) for e in env.values())
        assert not any(a.startswith("--ledger") for a in container(deployment)["args"])
    assert readers == {SCHEDULER, METER}
    assert not re.search(r"rollout restart", (CHART.parents[2] / "docs/install.md").read_text())


def test_monitoring_objects_follow_the_clusters_capabilities(policy: Path) -> None:
    without = {o["kind"] for o in _render(policy, "minimal")}
    assert not without & {"PodMonitor", "PrometheusRule"}
    served = _render(policy, "minimal", api_versions=[MONITORING_API])
    rule = one(served, "PrometheusRule")
    # The shipped rules, each reading the release's namespace only.
    shipped = (CHART / "files" / "rules.yaml").read_text()
    scoped = shipped.replace('namespace=~".+"', 'namespace="fairpool-system"')
    assert rule["spec"] == yaml.safe_load(scoped)
    endpoint = one(served, "PodMonitor")["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] == "metrics"
    # Scraped on the grid the meter counts samples on, set in one place.
    assert endpoint["interval"] == "30s"
    faster = _render(
        policy, "minimal", api_versions=[MONITORING_API], sets=["meter.scrapeIntervalSeconds=15"]
    )
    assert one(faster, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["interval"] == "15s"
    off = _render(
        policy,
        "minimal",
        api_versions=[MONITORING_API],
        sets=["monitoring.podMonitor.enabled=false", "monitoring.prometheusRule.enabled=false"],
    )
    assert not {o["kind"] for o in off} & {"PodMonitor", "PrometheusRule"}


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["api.tokensSecret=t", "api.tls.existingSecret="], "has no certificate"),
        (["policy.spec=null"], "policy.spec is empty"),
        (["monitoring.podMonitor.enabled=maybe"], "/monitoring/podMonitor/enabled"),
        (["scheduler.replicaz=3"], "additional properties 'replicaz' not allowed"),
        # `fairpool run` refuses it too: no pod's schedulerName can be Fair_Pool.
        (["scheduler.schedulerName=Fair_Pool"], "/scheduler/schedulerName"),
        (["meter.prometheusUrl=prometheus:9090"], "/meter/prometheusUrl"),
        (["ledger.sqlite.accessMode=ReadOnlyMany"], "/ledger/sqlite/accessMode"),
        # The meter refuses it at start (it must divide an hour): it crash-looped.
        (["meter.scrapeIntervalSeconds=7"], "/meter/scrapeIntervalSeconds"),
        # One pod of the several that mount the ledger could run.
        (["ledger.sqlite.accessMode=ReadWriteOncePod"], "/ledger/sqlite/accessMode"),
        # SQLite's write-ahead log does not work across hosts.
        (["ledger.sqlite.accessMode=ReadWriteMany"], "/ledger/sqlite/accessMode"),
        # Not quantities: the API server refused the Deployment or the claim mid-upgrade,
        # naming neither the value, and the release was left failed, half applied.
        (["scheduler.resources.limits.memory=lots"], "/scheduler/resources/limits/memory"),
        (["meter.resources.requests.cpu=-1"], "/meter/resources/requests/cpu"),
        (["meter.reports.size=big"], "/meter/reports/size"),
        (["ledger.sqlite.size=1 Gi"], "/ledger/sqlite/size"),
        (["scheduler.resources.limit.memory=1Gi"], "additional properties 'limit' not allowed"),
        # Not strings, or not tolerations: the API server refused the Deployment the same way.
        (["scheduler.nodeSelector.gpu=true"], "/scheduler/nodeSelector/gpu"),
        (["meter.tolerations[0].tolerationSeconds=soon"], "/meter/tolerations/0/tolerationSeconds"),
        (["grafana.dashboard.labels.grafana_dashboard=1"], "/grafana/dashboard/labels"),
        # What the Policy CRD refuses (or prunes) is refused before anything is applied:
        # the meter's policy ConfigMap and Deployment were updated first, the Policy
        # refused (or its misspelt key dropped with a warning), the release left failed.
        (["policy.spec.sharing.borowing=false"], "additional properties 'borowing' not allowed"),
        (["policy.spec.members[0].weight=0"], "/policy/spec/members/0/weight"),
        (["policy.spec.gpuModels[0].hourlyCost=abc"], "/policy/spec/gpuModels/0/hourlyCost"),
        (
            ["api.tokensSecret=t", "api.tls.certManager.enabled=true"],
            "needs api.tls.certManager.issuerRef.name",
        ),
        # One port for both servers: the scheduler could not start, and the API server
        # refused the Service (two ports the same).
        (
            ["api.tokensSecret=t", "api.tls.existingSecret=s", "api.port=9464"],
            "api.port and scheduler.metricsPort are both 9464",
        ),
    ],
)
def test_bad_values_are_refused_with_the_value_named(
    policy: Path, sets: list[str], message: str
) -> None:
    with pytest.raises(HelmError) as refused:
        _render(policy, "minimal", sets=sets)
    assert message in refused.value.output


def test_the_policy_values_take_what_the_crd_takes(policy: Path, tmp_path: Path) -> None:
    values = yaml.safe_load(policy.read_text())
    values["policy"]["spec"]["sharing"]["maxReclaimsPerJob"] = None  # no limit
    values["policy"]["spec"]["gpuModels"][0]["hourlyCost"] = 3  # a whole number
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(values))
    objects = render([path, VALUE_SETS / "minimal.yaml"])
    assert one(objects, "Policy")["spec"]["sharing"]["maxReclaimsPerJob"] is None
    # The policy managed elsewhere: no spec at all.
    render([VALUE_SETS / "minimal.yaml"], sets=["policy.create=false", "meter.enabled=false"])


def test_quantities_in_every_form_kubernetes_takes_are_accepted(policy: Path) -> None:
    objects = _render(
        policy,
        "minimal",
        sets=[
            "scheduler.resources.requests.cpu=0.5",
            "scheduler.resources.limits.memory=2e9",
            "meter.resources.requests.cpu=250m",
            "meter.resources.requests.ephemeral-storage=1G",
            "ledger.sqlite.size=10Gi",
        ],
    )
    resources = container(one(objects, "Deployment", SCHEDULER))["resources"]
    assert str(resources["requests"]["cpu"]) == "0.5"
    assert one(objects, "PersistentVolumeClaim", "fairpool-ledger")["spec"]["resources"] == {
        "requests": {"storage": "10Gi"}
    }


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        # The command takes the last flag given: the scheduler listened on 9999 while its
        # probes, Service and NetworkPolicy used 9464 (restarted by its startup probe).
        (
            ["scheduler.extraArgs={--metrics-port=9999}"],
            'scheduler.extraArgs: "--metrics-port=9999" is set by the chart: '
            "use scheduler.metricsPort",
        ),
        # Both replicas would lead, and bind.
        (["scheduler.extraArgs={--no-leader-elect}"], 'scheduler.extraArgs: "--no-leader-elect"'),
        (["meter.extraArgs={--metrics-port,9999}"], 'meter.extraArgs: "--metrics-port"'),
        (["meter.extraArgs={--prometheus=http://p:9090}"], "use meter.prometheusUrl"),
        # The meter would meter into another ledger than the one the scheduler and the
        # reports read (the chart refused the meter's --ledger-url, which it does not take).
        (["meter.extraArgs={--ledger=sqlite:////tmp/l.db}"], "use ledger.existingSecret"),
        (["meter.extraArgs={--ledger-url-file=/tmp/url}"], "use ledger.existingSecret"),
        (["scheduler.extraArgs={--ledger-url-file=/tmp/url}"], "use ledger.existingSecret"),
    ],
)
def test_extra_args_that_give_a_flag_the_chart_sets_are_refused(
    policy: Path, sets: list[str], message: str
) -> None:
    with pytest.raises(HelmError) as refused:
        render([policy, VALUE_SETS / "minimal.yaml"], set_strings=sets)
    assert message in refused.value.output


def test_extra_args_the_chart_does_not_set_are_passed_on(policy: Path) -> None:
    # docs/install.md's IPv6 setting, and YAML's special characters: each one argument.
    odd = "--x=a: b #c"
    objects = _render(
        policy,
        "minimal",
        sets=[
            "scheduler.extraArgs={--metrics-address=::}",
            "meter.extraArgs={--metrics-address=::}",
        ],
        set_strings=[f"meter.extraArgs[1]={odd}"],
    )
    for name in (SCHEDULER, METER):
        assert "--metrics-address=::" in container(one(objects, "Deployment", name))["args"]
    assert container(one(objects, "Deployment", METER))["args"][-1] == odd


def test_the_admission_policy_guards_the_annotations_fairpool_trusts(policy: Path) -> None:
    objects = _render(policy, "minimal")
    guard = one(objects, "ValidatingAdmissionPolicy")
    binding = one(objects, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == guard["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    account = one(objects, "ServiceAccount", f"{RELEASE}-scheduler")["metadata"]
    (condition,) = guard["spec"]["matchConditions"]
    assert (
        f"'system:serviceaccount:{account['namespace']}:{account['name']}'"
        in condition["expression"]
    )
    # Below 1.30 there is no ValidatingAdmissionPolicy: refused, naming the value, unless
    # it is turned off (which leaves the annotations to anyone who may write them).
    with pytest.raises(HelmError) as refused:
        _render(policy, "minimal", kube_version="v1.29.0")
    assert "admissionPolicy.enabled needs Kubernetes 1.30 or later" in refused.value.output
    older = _render(
        policy, "minimal", kube_version="v1.29.0", sets=["admissionPolicy.enabled=false"]
    )
    assert not [o for o in older if o["kind"].startswith("ValidatingAdmission")]


def test_rbac_has_no_wildcards_and_the_meter_no_rights(policy: Path) -> None:
    objects = _render(policy, "full")
    roles = [o for o in objects if o["kind"] in ("ClusterRole", "Role")]
    assert {r["metadata"]["name"] for r in roles} == {SCHEDULER}
    for role in roles:
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
            if "delete" in rule["verbs"]:
                assert rule["resources"] == ["pods"] and rule["apiGroups"] == [""], rule
            assert "deletecollection" not in rule["verbs"], rule
            assert "secrets" not in rule["resources"], rule
    subjects = [
        s["name"]
        for o in objects
        if o["kind"] in ("ClusterRoleBinding", "RoleBinding")
        for s in o["subjects"]
    ]
    assert subjects == [SCHEDULER, SCHEDULER]
    args = container(one(objects, "Deployment", SCHEDULER))["args"]
    role = one(objects, "Role")
    named = {n for r in role["rules"] for n in r.get("resourceNames", [])}
    assert named == {"fairpool-usage-history", SCHEDULER}
    assert "--usage-history-configmap=fairpool-usage-history" in args


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by `make prometheus` (mk/prometheus.mk)"
    done = subprocess.run(
        [promtool, "check", "rules", str(CHART / "files" / "rules.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 5 rules found" in done.stdout


def test_the_owner_alert_fires_past_the_allowance_and_names_what_holds_the_nodes(
    tmp_path: Path,
) -> None:
    """`promtool test rules`: the alert compares each member's owed seconds with the
    policy's allowance (one series per namespace, joined many to one), waits its minute,
    and its description reads the blocker gauge of the same member and GPU model, as the
    leader reads it: a standby, which carries out no preemption, reads another cause
    (the description read "borrowedreclaim_limit")."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by `make prometheus` (mk/prometheus.mk)"
    owed = 'fairpool_member_owed_seconds{namespace="fp", instance="s0", gpu_model="H100", '
    blocker = 'fairpool_member_owed_blocker{namespace="fp", instance="s0", gpu_model="H100", '
    standby_owed = owed.replace('"s0"', '"s1"')
    standby_blocker = blocker.replace('"s0"', '"s1"') + 'member="b", '
    description = (
        "b has had pending work for 3m 0s that fits its entitlement of H100 and the nodes it "
        "could get back, without getting those GPUs: longer than a reclaim takes by the "
        "policy (fairpool_owed_allowance_seconds); reclaim is not giving them back "
        "(fairpool explain tells why). What holds its nodes now "
        "(fairpool_member_owed_blocker): reclaim_limit."
    )
    alert = "FairpoolOwnerBelowEntitlement"
    tests = {
        "rule_files": [str(CHART / "files" / "rules.yaml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": owed + 'member="b"}', "values": "0 60 120 180 240"},
                    {"series": owed + 'member="a"}', "values": "0x4"},
                    {
                        "series": 'fairpool_owed_allowance_seconds{namespace="fp", instance="s0"}',
                        "values": "90x4",
                    },
                    {"series": blocker + 'member="b", cause="reclaim_limit"}', "values": "1x4"},
                    {"series": blocker + 'member="b", cause="borrowed"}', "values": "0x4"},
                    {"series": 'fairpool_leader{namespace="fp", instance="s0"}', "values": "1x4"},
                    # The standby: owed as long, its blocker another.
                    {"series": standby_owed + 'member="b"}', "values": "0 60 120 180 240"},
                    {"series": standby_blocker + 'cause="borrowed"}', "values": "1x4"},
                    {"series": standby_blocker + 'cause="reclaim_limit"}', "values": "0x4"},
                    {"series": 'fairpool_leader{namespace="fp", instance="s1"}', "values": "0x4"},
                    {
                        "series": 'fairpool_owed_allowance_seconds{namespace="fp", instance="s1"}',
                        "values": "90x4",
                    },
                ],
                "alert_rule_test": [
                    {"eval_time": "1m", "alertname": alert, "exp_alerts": []},
                    # 120 s owed, past the 90 s allowance: pending for its minute.
                    {"eval_time": "2m", "alertname": alert, "exp_alerts": []},
                    {
                        "eval_time": "3m",
                        "alertname": alert,
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "namespace": "fp",
                                    "member": "b",
                                    "gpu_model": "H100",
                                },
                                "exp_annotations": {
                                    "summary": "A member is kept from its entitlement",
                                    "description": description,
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "owner_alert.yaml"
    path.write_text(yaml.safe_dump(tests))
    done = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_metering_alert_fires_a_day_behind_with_hours_pending_or_runs_failing(
    tmp_path: Path,
) -> None:
    """`promtool test rules`: a meter whose last metered hour is more than a day old
    alerts when hours are pending (Prometheus unreachable) and when its runs fail (the
    ledger unreachable: the failed runs leave the pending hours at 0, and it never
    fired); one a day behind with neither, and one up to date whose runs fail, do not."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by `make prometheus` (mk/prometheus.mk)"
    day_ago = 86400 - 3600  # the last metered hour, at the first evaluation: 23 h old

    def meter(instance: str, pending: str, errors: str, last: int = day_ago) -> list[Any]:
        labels = f'namespace="fp", instance="{instance}"'
        runs = f"fairpool_meter_runs_total{{{labels}, result="
        return [
            {
                "series": f"fairpool_meter_last_metered_hour_timestamp_seconds{{{labels}}}",
                "values": f"{-last}x240",
            },
            {"series": f"fairpool_meter_pending_hours{{{labels}}}", "values": pending},
            {"series": runs + '"error"}', "values": errors},
            {"series": runs + '"ok"}', "values": "0x240"},
        ]

    alert = "FairpoolMeteringPendingHoursOld"

    def firing(*instances: str) -> list[dict[str, Any]]:
        description = (
            "The last metered hour is 1d 0h 30m 0s old, and hours are pending or metering "
            "runs fail: Prometheus or the ledger may be unreachable from the meter, or "
            "Prometheus may lack fairpool's series (fairpool meter status lists the pending "
            "hours; the meter's log says why a run failed)."
        )
        return [
            {
                "exp_labels": {"severity": "warning", "namespace": "fp", "instance": i},
                "exp_annotations": {
                    "summary": "Metering is more than a day behind",
                    "description": description,
                },
            }
            for i in instances
        ]

    tests = {
        "rule_files": [str(CHART / "files" / "rules.yaml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    *meter("pending", "3x240", "0x240"),
                    # The ledger is down: a run fails every hour, pending hours stay 0.
                    *meter("ledger-down", "0x240", "0+0x29 1+0x59 2+0x59 3+0x59 4+0x40"),
                    *meter("quiet", "0x240", "0x240"),
                    *meter("recent", "0x240", "0+0x29 1+0x59 2+0x59 3+0x59 4+0x40", 0),
                ],
                "alert_rule_test": [
                    {"eval_time": "30m", "alertname": alert, "exp_alerts": []},
                    # Past a day 60 min after the first evaluation, then its 15 min.
                    {"eval_time": "70m", "alertname": alert, "exp_alerts": []},
                    {
                        "eval_time": "90m",
                        "alertname": alert,
                        "exp_alerts": firing("ledger-down", "pending"),
                    },
                ],
            }
        ],
    }
    path = tmp_path / "metering_alert.yaml"
    path.write_text(yaml.safe_dump(tests))
    done = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _rule_file(policy: Path, folder: Path, namespace: str) -> Path:
    objects = _render(
        policy,
        "full",
        namespace=namespace,
        release=f"fp-{namespace}",
        sets=["monitoring.prometheusRule.enabled=true"],
    )
    path = folder / f"{namespace}.rules.yaml"
    path.write_text(yaml.safe_dump(one(objects, "PrometheusRule")["spec"]))
    return path


def test_two_releases_each_alert_once_on_their_own_pool(policy: Path, tmp_path: Path) -> None:
    """`promtool test rules` with the PrometheusRules of two releases, in namespaces a
    and b, loaded together as one Prometheus loads them: every rule read every namespace,
    so an alert of one pool fired once per release, and a release whose scheduler was not
    scraped at all got no FairpoolNoLeader while the other release's was."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by `make prometheus` (mk/prometheus.mk)"

    def leader(namespace: str, instance: str, value: int) -> dict[str, str]:
        labels = f'namespace="{namespace}", instance="{instance}"'
        return {"series": f"fairpool_leader{{{labels}}}", "values": f"{value}x10"}

    def alert(name: str, namespace: str, summary: str, description: str) -> dict[str, Any]:
        return {
            "eval_time": "5m",
            "alertname": name,
            "exp_alerts": [
                {
                    "exp_labels": {"severity": "critical", "namespace": namespace},
                    "exp_annotations": {"summary": summary, "description": description},
                }
            ],
        }

    tests = {
        "rule_files": [str(_rule_file(policy, tmp_path, ns)) for ns in ("a", "b")],
        "evaluation_interval": "1m",
        "tests": [
            {
                # Two leaders in b, one in a.
                "interval": "1m",
                "input_series": [leader("a", "a0", 1), leader("b", "b0", 1), leader("b", "b1", 1)],
                "alert_rule_test": [
                    alert(
                        "FairpoolSeveralLeaders",
                        "b",
                        "More than one fairpool replica says it is the leader",
                        "2 replicas in b report fairpool_leader 1; both may bind, and "
                        "metering would count their pods twice.",
                    ),
                    {"eval_time": "5m", "alertname": "FairpoolNoLeader", "exp_alerts": []},
                ],
            },
            {
                # a's scheduler is not scraped at all; b's leads.
                "interval": "1m",
                "input_series": [leader("b", "b0", 1)],
                "alert_rule_test": [
                    alert(
                        "FairpoolNoLeader",
                        "a",
                        "No fairpool scheduler replica is the leader",
                        "No fairpool replica in a has held the leader Lease for 2 minutes (or "
                        "none is scraped): pending GPU pods are not being scheduled.",
                    ),
                ],
            },
        ],
    }
    path = tmp_path / "two_releases.yaml"
    path.write_text(yaml.safe_dump(tests))
    done = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each panel's PromQL, with Grafana's variables given values, as a recording rule:
    `promtool check rules` parses it as Prometheus would."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by `make prometheus` (mk/prometheus.mk)"
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    values = {
        "$namespace": "fairpool-system",
        "$member": ".*",
        "$gpu_model": ".*",
        "$__rate_interval": "5m",
    }
    rules = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in values.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, (panel["title"], expr)
            rules.append({"record": f"panel_{panel['id']}_{target['refId']}", "expr": expr})
    assert len(rules) > 20
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


def test_a_dashboard_shows_its_own_pools_series_not_another_releases(tmp_path: Path) -> None:
    """`promtool test rules`: two releases (two pools, in two namespaces) export the same
    metrics, even the same member names; each panel, with the namespace variable the
    chart opens the dashboard on, reads its own pool's series only (it read both: the
    allocated GPUs panel showed the larger of the two pools' numbers, the leader panel
    four replicas)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by `make prometheus` (mk/prometheus.mk)"
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())

    def panel(starts: str) -> str:
        found = [
            t["expr"]
            for p in dashboard["panels"]
            for t in p.get("targets", [])
            if t["expr"].startswith(starts)
        ]
        assert len(found) == 1, (starts, found)
        expr: str = found[0]
        for name, value in {"$namespace": "pool-a", "$member": ".*", "$gpu_model": ".*"}.items():
            expr = expr.replace(name, value)
        return expr

    allocated = panel("max by (member, gpu_model) (fairpool_member_allocated_gpus")
    leader = panel("fairpool_leader")
    series = []
    for namespace, gpus in (("pool-a", 4), ("pool-b", 7)):
        member = f'namespace="{namespace}", member="uni-north", gpu_model="H100"'
        series.append(
            {"series": f"fairpool_member_allocated_gpus{{{member}}}", "values": f"{gpus}x5"}
        )
        for replica, leads in (("0", 1), ("1", 0)):
            labels = f'namespace="{namespace}", instance="{namespace}-{replica}"'
            series.append({"series": f"fairpool_leader{{{labels}}}", "values": f"{leads}x5"})
    pool_a = 'namespace="pool-a", instance="pool-a'
    tests = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": allocated,
                        "eval_time": "2m",
                        "exp_samples": [
                            {"labels": '{member="uni-north", gpu_model="H100"}', "value": 4}
                        ],
                    },
                    {
                        "expr": leader,
                        "eval_time": "2m",
                        "exp_samples": [
                            {"labels": f'fairpool_leader{{{pool_a}-{r}"}}', "value": v}
                            for r, v in (("0", 1), ("1", 0))
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "dashboard_namespace.yaml"
    path.write_text(yaml.safe_dump(tests))
    done = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_an_https_prometheus_is_checked_against_the_ca_the_values_name(policy: Path) -> None:
    """The meter checks an https Prometheus's certificate; the chart mounts the CA
    bundle the values name and passes it, or passes --prometheus-insecure when asked."""
    plain = container(one(_render(policy, "minimal"), "Deployment", METER))
    assert not [a for a in plain["args"] if a.startswith("--prometheus-")]
    objects = _render(
        policy,
        "minimal",
        sets=[
            "meter.prometheusUrl=https://prometheus.monitoring.svc:9090",
            "meter.prometheusTLS.caConfigMap=kube-root-ca.crt",
        ],
    )
    meter = one(objects, "Deployment", METER)
    args = container(meter)["args"]
    assert "--prometheus-ca=/etc/fairpool/prometheus-ca/ca.crt" in args
    mounts = {m["name"]: m for m in container(meter)["volumeMounts"]}
    assert mounts["prometheus-ca"]["mountPath"] == "/etc/fairpool/prometheus-ca"
    volumes = {v["name"]: v for v in meter["spec"]["template"]["spec"]["volumes"]}
    assert volumes["prometheus-ca"]["configMap"]["name"] == "kube-root-ca.crt"
    insecure = _render(policy, "minimal", sets=["meter.prometheusTLS.insecureSkipVerify=true"])
    assert "--prometheus-insecure" in container(one(insecure, "Deployment", METER))["args"]
    with pytest.raises(HelmError) as both:
        _render(
            policy,
            "minimal",
            sets=[
                "meter.prometheusTLS.caConfigMap=kube-root-ca.crt",
                "meter.prometheusTLS.insecureSkipVerify=true",
            ],
        )
    assert "check the certificate or not" in both.value.output
