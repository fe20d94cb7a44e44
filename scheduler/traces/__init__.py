"""Workload traces: the canonical CSV, importers of public GPU-cluster traces, and a
synthetic generator."""

from scheduler.traces.csv import read_trace, write_trace
from scheduler.traces.errors import TraceError, TraceIssue
from scheduler.traces.model import Trace, TraceJob
from scheduler.traces.synth import node_gpus_of, synthesize

__all__ = [
    "Trace",
    "TraceError",
    "TraceIssue",
    "TraceJob",
    "node_gpus_of",
    "read_trace",
    "synthesize",
    "write_trace",
]
