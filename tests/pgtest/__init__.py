"""A private PostgreSQL server on loopback for tests and benchmarks (`PostgresServer`)."""

from tests.pgtest.server import PostgresMissing, PostgresServer

__all__ = ["PostgresMissing", "PostgresServer"]
