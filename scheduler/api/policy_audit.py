"""The audit log of every policy version (table `policy_versions` in the ledger database):
author, time, origin and diff, numbered by version.

It has a module of its own because it is the only part of the policy store that needs the
ledger's database (SQLAlchemy and the migrations): a scheduler whose policy is a file or a
ConfigMap starts without importing them.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from policies.model import MAX_VERSION
from reports.ledger.connect import open_engine
from reports.ledger.schema import policy_versions
from scheduler.api.policy_store import Origin, StoredVersion, VersionConflict


class AuditLog:
    """Every policy version with author, time and diff, in the ledger database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = open_engine(url, create=True)

    def close(self) -> None:
        self._engine.dispose()

    def append(self, entry: StoredVersion) -> None:
        row = {
            "version": entry.version,
            "author": entry.author,
            "applied_at": entry.applied_at,
            "origin": str(entry.origin),
            "comment": entry.comment,
            "document": entry.document,
            "diff": entry.diff,
            "sha256": hashlib.sha256(entry.document.encode()).hexdigest(),
        }
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(policy_versions).values(**row))
        except IntegrityError as exc:
            raise VersionConflict(f"version {entry.version} is already recorded") from exc

    def claim(self, entry: StoredVersion, recorded: StoredVersion) -> bool:
        """Give `recorded`, an outside change, `entry`'s author, origin and comment: for
        the replica whose API write another replica recorded first. Only while the row is
        still `recorded` (same document, still an outside change); True when it was."""
        query = (
            update(policy_versions)
            .where(
                policy_versions.c.version == recorded.version,
                policy_versions.c.origin == str(Origin.EXTERNAL),
                policy_versions.c.sha256 == hashlib.sha256(recorded.document.encode()).hexdigest(),
            )
            .values(author=entry.author, origin=str(entry.origin), comment=entry.comment)
        )
        with self._engine.begin() as conn:
            return conn.execute(query).rowcount == 1

    def latest(self) -> StoredVersion | None:
        found = self.list(limit=1)
        return found[0] if found else None

    def get(self, version: int) -> StoredVersion | None:
        if not 0 <= version <= MAX_VERSION:
            # Never stored, and past the column's INTEGER: PostgreSQL refused the
            # comparison itself ("integer out of range"), an INTERNAL for GetPolicy.
            return None
        query = select(policy_versions).where(policy_versions.c.version == version)
        with self._engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return _entry(row) if row is not None else None

    def list(
        self, limit: int = 50, before: int | None = None, after: int | None = None
    ) -> list[StoredVersion]:
        """Newest first, or oldest first when `after` is given (for watchers)."""
        if after is not None and after >= MAX_VERSION:
            return []
        if before is not None and before > MAX_VERSION:
            before = None  # every version is older (and the bound past INTEGER, see get)
        query = select(policy_versions)
        if before is not None:
            query = query.where(policy_versions.c.version < before)
        if after is not None:
            query = query.where(policy_versions.c.version > after)
            query = query.order_by(policy_versions.c.version.asc())
        else:
            query = query.order_by(policy_versions.c.version.desc())
        with self._engine.connect() as conn:
            rows = conn.execute(query.limit(limit)).mappings().all()
        return [_entry(r) for r in rows]


def _entry(row: Any) -> StoredVersion:
    return StoredVersion(
        version=row["version"],
        author=row["author"],
        applied_at=row["applied_at"],
        origin=Origin(row["origin"]),
        comment=row["comment"],
        document=row["document"],
        diff=row["diff"],
    )
