import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_KIND_UNSPECIFIED: _ClassVar[JobKind]
    JOB_KIND_POD: _ClassVar[JobKind]
    JOB_KIND_GANG: _ClassVar[JobKind]

class SimulationSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIMULATION_SOURCE_UNSPECIFIED: _ClassVar[SimulationSource]
    SIMULATION_SOURCE_TRACE: _ClassVar[SimulationSource]
    SIMULATION_SOURCE_LEDGER: _ClassVar[SimulationSource]
JOB_KIND_UNSPECIFIED: JobKind
JOB_KIND_POD: JobKind
JOB_KIND_GANG: JobKind
SIMULATION_SOURCE_UNSPECIFIED: SimulationSource
SIMULATION_SOURCE_TRACE: SimulationSource
SIMULATION_SOURCE_LEDGER: SimulationSource

class MemberShare(_message.Message):
    __slots__ = ("member", "gpu_model", "contribution", "entitlement", "fair_share", "allocated", "borrowed", "lent", "pending", "demand", "reclaimable")
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    GPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    ENTITLEMENT_FIELD_NUMBER: _ClassVar[int]
    FAIR_SHARE_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    BORROWED_FIELD_NUMBER: _ClassVar[int]
    LENT_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    DEMAND_FIELD_NUMBER: _ClassVar[int]
    RECLAIMABLE_FIELD_NUMBER: _ClassVar[int]
    member: str
    gpu_model: str
    contribution: int
    entitlement: int
    fair_share: float
    allocated: int
    borrowed: int
    lent: int
    pending: int
    demand: int
    reclaimable: int
    def __init__(self, member: _Optional[str] = ..., gpu_model: _Optional[str] = ..., contribution: _Optional[int] = ..., entitlement: _Optional[int] = ..., fair_share: _Optional[float] = ..., allocated: _Optional[int] = ..., borrowed: _Optional[int] = ..., lent: _Optional[int] = ..., pending: _Optional[int] = ..., demand: _Optional[int] = ..., reclaimable: _Optional[int] = ...) -> None: ...

class PoolSummary(_message.Message):
    __slots__ = ("gpu_model", "capacity", "allocated", "pending", "members")
    GPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    gpu_model: str
    capacity: int
    allocated: int
    pending: int
    members: int
    def __init__(self, gpu_model: _Optional[str] = ..., capacity: _Optional[int] = ..., allocated: _Optional[int] = ..., pending: _Optional[int] = ..., members: _Optional[int] = ...) -> None: ...

class GetEntitlementsRequest(_message.Message):
    __slots__ = ("member", "gpu_model")
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    GPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    member: str
    gpu_model: str
    def __init__(self, member: _Optional[str] = ..., gpu_model: _Optional[str] = ...) -> None: ...

class GetEntitlementsResponse(_message.Message):
    __slots__ = ("policy_version", "snapshot_time", "shares", "pool")
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_TIME_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    policy_version: int
    snapshot_time: _timestamp_pb2.Timestamp
    shares: _containers.RepeatedCompositeFieldContainer[MemberShare]
    pool: _containers.RepeatedCompositeFieldContainer[PoolSummary]
    def __init__(self, policy_version: _Optional[int] = ..., snapshot_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., shares: _Optional[_Iterable[_Union[MemberShare, _Mapping]]] = ..., pool: _Optional[_Iterable[_Union[PoolSummary, _Mapping]]] = ...) -> None: ...

class PendingJob(_message.Message):
    __slots__ = ("job_id", "member", "kind", "namespace", "pod_names", "min_member", "gpus", "gpu_model", "priority", "waiting_seconds")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    POD_NAMES_FIELD_NUMBER: _ClassVar[int]
    MIN_MEMBER_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    GPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    WAITING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    member: str
    kind: JobKind
    namespace: str
    pod_names: _containers.RepeatedScalarFieldContainer[str]
    min_member: int
    gpus: int
    gpu_model: str
    priority: int
    waiting_seconds: float
    def __init__(self, job_id: _Optional[str] = ..., member: _Optional[str] = ..., kind: _Optional[_Union[JobKind, str]] = ..., namespace: _Optional[str] = ..., pod_names: _Optional[_Iterable[str]] = ..., min_member: _Optional[int] = ..., gpus: _Optional[int] = ..., gpu_model: _Optional[str] = ..., priority: _Optional[int] = ..., waiting_seconds: _Optional[float] = ...) -> None: ...

class ListPendingRequest(_message.Message):
    __slots__ = ("member", "limit")
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    member: str
    limit: int
    def __init__(self, member: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListPendingResponse(_message.Message):
    __slots__ = ("jobs", "total")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[PendingJob]
    total: int
    def __init__(self, jobs: _Optional[_Iterable[_Union[PendingJob, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class ExplainPendingRequest(_message.Message):
    __slots__ = ("name", "namespace")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    name: str
    namespace: str
    def __init__(self, name: _Optional[str] = ..., namespace: _Optional[str] = ...) -> None: ...

class ExplainPendingResponse(_message.Message):
    __slots__ = ("job", "explanation")
    JOB_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    job: PendingJob
    explanation: str
    def __init__(self, job: _Optional[_Union[PendingJob, _Mapping]] = ..., explanation: _Optional[str] = ...) -> None: ...

class SimulateRequest(_message.Message):
    __slots__ = ("draft_policy_yaml", "source", "trace_csv", "ledger_days", "batch_seconds")
    DRAFT_POLICY_YAML_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TRACE_CSV_FIELD_NUMBER: _ClassVar[int]
    LEDGER_DAYS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    draft_policy_yaml: str
    source: SimulationSource
    trace_csv: str
    ledger_days: int
    batch_seconds: float
    def __init__(self, draft_policy_yaml: _Optional[str] = ..., source: _Optional[_Union[SimulationSource, str]] = ..., trace_csv: _Optional[str] = ..., ledger_days: _Optional[int] = ..., batch_seconds: _Optional[float] = ...) -> None: ...

class MemberOutcome(_message.Message):
    __slots__ = ("member", "gpu_hours_used", "gpu_hours_entitled", "gpu_hours_borrowed", "gpu_hours_lent", "jobs_completed", "mean_wait_s", "p95_wait_s", "mean_jct_s", "gpu_hours_used_on_others_hardware", "gpu_hours_lost_to_reclaim", "gpu_hours_lost_by_cause", "preemptions", "time_to_entitlement_p99_s")
    class GpuHoursLostByCauseEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    GPU_HOURS_USED_FIELD_NUMBER: _ClassVar[int]
    GPU_HOURS_ENTITLED_FIELD_NUMBER: _ClassVar[int]
    GPU_HOURS_BORROWED_FIELD_NUMBER: _ClassVar[int]
    GPU_HOURS_LENT_FIELD_NUMBER: _ClassVar[int]
    JOBS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    MEAN_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    P95_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    MEAN_JCT_S_FIELD_NUMBER: _ClassVar[int]
    GPU_HOURS_USED_ON_OTHERS_HARDWARE_FIELD_NUMBER: _ClassVar[int]
    GPU_HOURS_LOST_TO_RECLAIM_FIELD_NUMBER: _ClassVar[int]
    GPU_HOURS_LOST_BY_CAUSE_FIELD_NUMBER: _ClassVar[int]
    PREEMPTIONS_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_ENTITLEMENT_P99_S_FIELD_NUMBER: _ClassVar[int]
    member: str
    gpu_hours_used: float
    gpu_hours_entitled: float
    gpu_hours_borrowed: float
    gpu_hours_lent: float
    jobs_completed: int
    mean_wait_s: float
    p95_wait_s: float
    mean_jct_s: float
    gpu_hours_used_on_others_hardware: float
    gpu_hours_lost_to_reclaim: float
    gpu_hours_lost_by_cause: _containers.ScalarMap[str, float]
    preemptions: int
    time_to_entitlement_p99_s: float
    def __init__(self, member: _Optional[str] = ..., gpu_hours_used: _Optional[float] = ..., gpu_hours_entitled: _Optional[float] = ..., gpu_hours_borrowed: _Optional[float] = ..., gpu_hours_lent: _Optional[float] = ..., jobs_completed: _Optional[int] = ..., mean_wait_s: _Optional[float] = ..., p95_wait_s: _Optional[float] = ..., mean_jct_s: _Optional[float] = ..., gpu_hours_used_on_others_hardware: _Optional[float] = ..., gpu_hours_lost_to_reclaim: _Optional[float] = ..., gpu_hours_lost_by_cause: _Optional[_Mapping[str, float]] = ..., preemptions: _Optional[int] = ..., time_to_entitlement_p99_s: _Optional[float] = ...) -> None: ...

class SimulationSummary(_message.Message):
    __slots__ = ("label", "policy_version", "utilization", "fairness_jain", "entitlement_violation_gpu_s", "preemptions", "members", "summary_json", "utilization_while_pending", "makespan_s", "reclaim_lost_fraction", "gpu_hours_lost_to_reclaim", "gpu_hours_lost_by_cause", "preemptions_per_job_max", "time_to_entitlement_p99_s", "mean_jct_s", "p95_wait_s")
    class GpuHoursLostByCauseEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    LABEL_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    FAIRNESS_JAIN_FIELD_NUMBER: _ClassVar[int]
    ENTITLEMENT_VIOLATION_GPU_S_FIELD_NUMBER: _ClassVar[int]
    PREEMPTIONS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_JSON_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_WHILE_PENDING_FIELD_NUMBER: _ClassVar[int]
    MAKESPAN_S_FIELD_NUMBER: _ClassVar[int]
    RECLAIM_LOST_FRACTION_FIELD_NUMBER: _ClassVar[int]
    GPU_HOURS_LOST_TO_RECLAIM_FIELD_NUMBER: _ClassVar[int]
    GPU_HOURS_LOST_BY_CAUSE_FIELD_NUMBER: _ClassVar[int]
    PREEMPTIONS_PER_JOB_MAX_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_ENTITLEMENT_P99_S_FIELD_NUMBER: _ClassVar[int]
    MEAN_JCT_S_FIELD_NUMBER: _ClassVar[int]
    P95_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    label: str
    policy_version: int
    utilization: float
    fairness_jain: float
    entitlement_violation_gpu_s: float
    preemptions: int
    members: _containers.RepeatedCompositeFieldContainer[MemberOutcome]
    summary_json: str
    utilization_while_pending: float
    makespan_s: float
    reclaim_lost_fraction: float
    gpu_hours_lost_to_reclaim: float
    gpu_hours_lost_by_cause: _containers.ScalarMap[str, float]
    preemptions_per_job_max: int
    time_to_entitlement_p99_s: float
    mean_jct_s: float
    p95_wait_s: float
    def __init__(self, label: _Optional[str] = ..., policy_version: _Optional[int] = ..., utilization: _Optional[float] = ..., fairness_jain: _Optional[float] = ..., entitlement_violation_gpu_s: _Optional[float] = ..., preemptions: _Optional[int] = ..., members: _Optional[_Iterable[_Union[MemberOutcome, _Mapping]]] = ..., summary_json: _Optional[str] = ..., utilization_while_pending: _Optional[float] = ..., makespan_s: _Optional[float] = ..., reclaim_lost_fraction: _Optional[float] = ..., gpu_hours_lost_to_reclaim: _Optional[float] = ..., gpu_hours_lost_by_cause: _Optional[_Mapping[str, float]] = ..., preemptions_per_job_max: _Optional[int] = ..., time_to_entitlement_p99_s: _Optional[float] = ..., mean_jct_s: _Optional[float] = ..., p95_wait_s: _Optional[float] = ...) -> None: ...

class SimulateResponse(_message.Message):
    __slots__ = ("current", "draft")
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    current: SimulationSummary
    draft: SimulationSummary
    def __init__(self, current: _Optional[_Union[SimulationSummary, _Mapping]] = ..., draft: _Optional[_Union[SimulationSummary, _Mapping]] = ...) -> None: ...
