import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetUsageRequest(_message.Message):
    __slots__ = ("member", "start", "end")
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    member: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    def __init__(self, member: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UsageRow(_message.Message):
    __slots__ = ("member", "gpu_model", "gpu_hours_used", "gpu_hours_used_on_others_hardware", "gpu_hours_lent")
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    GPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    GPU_HOURS_USED_FIELD_NUMBER: _ClassVar[int]
    GPU_HOURS_USED_ON_OTHERS_HARDWARE_FIELD_NUMBER: _ClassVar[int]
    GPU_HOURS_LENT_FIELD_NUMBER: _ClassVar[int]
    member: str
    gpu_model: str
    gpu_hours_used: float
    gpu_hours_used_on_others_hardware: float
    gpu_hours_lent: float
    def __init__(self, member: _Optional[str] = ..., gpu_model: _Optional[str] = ..., gpu_hours_used: _Optional[float] = ..., gpu_hours_used_on_others_hardware: _Optional[float] = ..., gpu_hours_lent: _Optional[float] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("start", "end", "rows")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    rows: _containers.RepeatedCompositeFieldContainer[UsageRow]
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rows: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ...) -> None: ...

class GetReportRequest(_message.Message):
    __slots__ = ("month",)
    MONTH_FIELD_NUMBER: _ClassVar[int]
    month: str
    def __init__(self, month: _Optional[str] = ...) -> None: ...

class ReportFile(_message.Message):
    __slots__ = ("name", "media_type", "content")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    media_type: str
    content: bytes
    def __init__(self, name: _Optional[str] = ..., media_type: _Optional[str] = ..., content: _Optional[bytes] = ...) -> None: ...

class GetReportResponse(_message.Message):
    __slots__ = ("month", "files")
    MONTH_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    month: str
    files: _containers.RepeatedCompositeFieldContainer[ReportFile]
    def __init__(self, month: _Optional[str] = ..., files: _Optional[_Iterable[_Union[ReportFile, _Mapping]]] = ...) -> None: ...
