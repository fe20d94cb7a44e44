"""Who talks to the test kube-apiserver: static bearer tokens and one kubeconfig each.

- `admin`: system:masters, for tests and tooling.
- `scheduler`: user `fairpool`, the fairpool secondary scheduler, limited by rbac.yaml.
- `kube-scheduler`: the stock scheduler (smoke tests), bootstrap role system:kube-scheduler.
- `kwok`: the fake kubelets; system:masters because it writes every node's and pod's status.
- `kube-controller-manager`: the Job, ReplicaSet, namespace, garbage-collector and
  node-lifecycle controllers; system:masters because without service-account tokens
  (the ServiceAccount admission plugin is off) every controller runs as this one user.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Identity:
    name: str
    user: str
    groups: tuple[str, ...] = ()


ADMIN = Identity("admin", "fairpool-admin", ("system:masters",))
SCHEDULER = Identity("scheduler", "fairpool")
KUBE_SCHEDULER = Identity("kube-scheduler", "system:kube-scheduler")
KWOK = Identity("kwok", "kwok", ("system:masters",))
CONTROLLER_MANAGER = Identity(
    "kube-controller-manager", "system:kube-controller-manager", ("system:masters",)
)
IDENTITIES: dict[str, Identity] = {
    i.name: i for i in (ADMIN, SCHEDULER, KUBE_SCHEDULER, KWOK, CONTROLLER_MANAGER)
}


def new_tokens() -> dict[str, str]:
    return {name: secrets.token_urlsafe(32) for name in IDENTITIES}


def token_file_text(tokens: dict[str, str]) -> str:
    """kube-apiserver's --token-auth-file: token,user,uid,"group1,group2"."""
    lines = []
    for name, identity in IDENTITIES.items():
        groups = ",".join(identity.groups)
        lines.append(f'{tokens[name]},{identity.user},{identity.user},"{groups}"')
    return "\n".join(lines) + "\n"


def kubeconfig_text(server: str, ca_cert: Path, identity: str, token: str) -> str:
    cluster = "fairpool-test"
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {"server": server, "certificate-authority": str(ca_cert)},
            }
        ],
        "users": [{"name": identity, "user": {"token": token}}],
        "contexts": [{"name": identity, "context": {"cluster": cluster, "user": identity}}],
        "current-context": identity,
    }
    return yaml.safe_dump(document, sort_keys=False)
