"""An audit history whose database stops answering: for the policy store's tests and the
API server's, which check that an apply with the ledger down changes nothing."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from scheduler.api.policy_audit import AuditLog


class FailingAudit:
    """The audit history whose database stops answering for the calls named in
    `down`, as an OperationalError (the database's own error, through SQLAlchemy)."""

    def __init__(self, inner: AuditLog) -> None:
        self.inner = inner
        self.down: set[str] = set()

    def __getattr__(self, name: str) -> object:
        found = getattr(self.inner, name)
        if name not in self.down:
            return found

        def failing(*args: object, **kwargs: object) -> object:
            raise OperationalError("INSERT/SELECT policy_versions", {}, Exception("gone"))

        return failing
