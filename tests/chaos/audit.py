"""kube-apiserver's audit log of the calls that bind and remove pods, and what it proves.

The API server writes one JSON line per call that reached it and was answered
(`ResponseComplete`), whoever made it, so the binds of a replica that was killed an
instant later are in it too. A pod bound twice is a Binding answered 2xx twice for the
same pod (the API server should refuse the second with 409).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted", "Panic"]
rules:
  - level: Request
    verbs: ["create"]
    resources: [{group: "", resources: ["pods/binding"]}]
  - level: Metadata
    verbs: ["create"]
    resources: [{group: "", resources: ["pods/eviction"]}]
  - level: Metadata
    verbs: ["delete"]
    resources: [{group: "", resources: ["pods"]}]
  - level: None
"""


def apiserver_args(folder: Path) -> list[str]:
    """kube-apiserver flags writing the audit log to `folder/audit.log`."""
    folder.mkdir(parents=True, exist_ok=True)
    policy = folder / "audit-policy.yaml"
    policy.write_text(POLICY)
    return [
        f"--audit-policy-file={policy}",
        f"--audit-log-path={folder / 'audit.log'}",
        "--audit-log-mode=blocking",
        "--audit-log-maxsize=0",
    ]


@dataclass(frozen=True, slots=True)
class Call:
    at: float
    """When the API server answered (epoch seconds)."""
    action: str
    """bind, evict or delete."""
    pod: str
    """namespace/name."""
    code: int
    user: str
    node: str = ""
    """The node a Binding names."""

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300


def parse_line(line: str) -> Call | None:
    """One audit event as a `Call`; None for other calls or a partly written line."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    ref = event.get("objectRef") or {}
    if ref.get("resource") != "pods" or "stageTimestamp" not in event:
        return None
    action = {"binding": "bind", "eviction": "evict"}.get(ref.get("subresource", ""))
    if action is None:
        if ref.get("subresource") or event.get("verb") != "delete":
            return None
        action = "delete"
    return Call(
        at=datetime.fromisoformat(event["stageTimestamp"].replace("Z", "+00:00")).timestamp(),
        action=action,
        pod=f"{ref.get('namespace', '')}/{ref.get('name', '')}",
        code=int((event.get("responseStatus") or {}).get("code") or 0),
        user=str((event.get("user") or {}).get("username", "")),
        node=str(((event.get("requestObject") or {}).get("target") or {}).get("name", "")),
    )


class AuditLog:
    """Reads the log as it grows (complete lines only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.calls: list[Call] = []
        self._offset = 0

    def poll(self) -> list[Call]:
        """The calls written since the last poll."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self._offset += end
        new = [c for line in data[:end].decode().splitlines() if (c := parse_line(line))]
        self.calls.extend(new)
        return new


def double_binds(calls: Iterable[Call]) -> dict[str, int]:
    """pod -> successful Bindings, for pods bound more than once."""
    bound = Counter(c.pod for c in calls if c.action == "bind" and c.ok)
    return {pod: n for pod, n in sorted(bound.items()) if n > 1}


def first_bind(calls: Iterable[Call], after: float) -> float | None:
    """When the first successful Binding answered at or after `after` was answered."""
    times = [c.at for c in calls if c.action == "bind" and c.ok and c.at >= after]
    return min(times) if times else None


def removed_by(calls: Iterable[Call], user: str) -> set[str]:
    """Pods `user` evicted or deleted (answered 2xx)."""
    return {c.pod for c in calls if c.action in ("evict", "delete") and c.ok and c.user == user}
