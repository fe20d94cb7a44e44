"""Workload traces: the canonical CSV, importers of public GPU-cluster traces, and a
synthetic generator."""

from scheduler.traces.model import Trace, TraceJob

__all__ = ["Trace", "TraceJob"]
