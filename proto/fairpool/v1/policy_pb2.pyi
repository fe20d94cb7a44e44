import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PolicyOrigin(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POLICY_ORIGIN_UNSPECIFIED: _ClassVar[PolicyOrigin]
    POLICY_ORIGIN_BOOTSTRAP: _ClassVar[PolicyOrigin]
    POLICY_ORIGIN_API: _ClassVar[PolicyOrigin]
    POLICY_ORIGIN_EXTERNAL: _ClassVar[PolicyOrigin]
POLICY_ORIGIN_UNSPECIFIED: PolicyOrigin
POLICY_ORIGIN_BOOTSTRAP: PolicyOrigin
POLICY_ORIGIN_API: PolicyOrigin
POLICY_ORIGIN_EXTERNAL: PolicyOrigin

class PolicyVersion(_message.Message):
    __slots__ = ("version", "author", "applied_at", "yaml", "diff", "comment", "origin", "member_view")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_FIELD_NUMBER: _ClassVar[int]
    YAML_FIELD_NUMBER: _ClassVar[int]
    DIFF_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    MEMBER_VIEW_FIELD_NUMBER: _ClassVar[int]
    version: int
    author: str
    applied_at: _timestamp_pb2.Timestamp
    yaml: str
    diff: str
    comment: str
    origin: PolicyOrigin
    member_view: str
    def __init__(self, version: _Optional[int] = ..., author: _Optional[str] = ..., applied_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., yaml: _Optional[str] = ..., diff: _Optional[str] = ..., comment: _Optional[str] = ..., origin: _Optional[_Union[PolicyOrigin, str]] = ..., member_view: _Optional[str] = ...) -> None: ...

class FieldViolation(_message.Message):
    __slots__ = ("path", "line", "message")
    PATH_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    path: str
    line: int
    message: str
    def __init__(self, path: _Optional[str] = ..., line: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ShareChange(_message.Message):
    __slots__ = ("member", "gpu_model", "entitlement_before", "entitlement_after", "fair_share_before", "fair_share_after")
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    GPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    ENTITLEMENT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    ENTITLEMENT_AFTER_FIELD_NUMBER: _ClassVar[int]
    FAIR_SHARE_BEFORE_FIELD_NUMBER: _ClassVar[int]
    FAIR_SHARE_AFTER_FIELD_NUMBER: _ClassVar[int]
    member: str
    gpu_model: str
    entitlement_before: int
    entitlement_after: int
    fair_share_before: float
    fair_share_after: float
    def __init__(self, member: _Optional[str] = ..., gpu_model: _Optional[str] = ..., entitlement_before: _Optional[int] = ..., entitlement_after: _Optional[int] = ..., fair_share_before: _Optional[float] = ..., fair_share_after: _Optional[float] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class GetPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: PolicyVersion
    def __init__(self, policy: _Optional[_Union[PolicyVersion, _Mapping]] = ...) -> None: ...

class ValidatePolicyRequest(_message.Message):
    __slots__ = ("yaml",)
    YAML_FIELD_NUMBER: _ClassVar[int]
    yaml: str
    def __init__(self, yaml: _Optional[str] = ...) -> None: ...

class ValidatePolicyResponse(_message.Message):
    __slots__ = ("members", "gpu_models")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    GPU_MODELS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedScalarFieldContainer[str]
    gpu_models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, members: _Optional[_Iterable[str]] = ..., gpu_models: _Optional[_Iterable[str]] = ...) -> None: ...

class ApplyPolicyRequest(_message.Message):
    __slots__ = ("yaml", "expected_version", "dry_run", "comment")
    YAML_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    yaml: str
    expected_version: int
    dry_run: bool
    comment: str
    def __init__(self, yaml: _Optional[str] = ..., expected_version: _Optional[int] = ..., dry_run: _Optional[bool] = ..., comment: _Optional[str] = ...) -> None: ...

class ApplyPolicyResponse(_message.Message):
    __slots__ = ("applied", "dry_run", "changes", "diff", "base_version")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    DIFF_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    applied: PolicyVersion
    dry_run: bool
    changes: _containers.RepeatedCompositeFieldContainer[ShareChange]
    diff: str
    base_version: int
    def __init__(self, applied: _Optional[_Union[PolicyVersion, _Mapping]] = ..., dry_run: _Optional[bool] = ..., changes: _Optional[_Iterable[_Union[ShareChange, _Mapping]]] = ..., diff: _Optional[str] = ..., base_version: _Optional[int] = ...) -> None: ...

class ListPolicyVersionsRequest(_message.Message):
    __slots__ = ("page_size", "before_version", "omit_yaml")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    BEFORE_VERSION_FIELD_NUMBER: _ClassVar[int]
    OMIT_YAML_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    before_version: int
    omit_yaml: bool
    def __init__(self, page_size: _Optional[int] = ..., before_version: _Optional[int] = ..., omit_yaml: _Optional[bool] = ...) -> None: ...

class ListPolicyVersionsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[PolicyVersion]
    def __init__(self, versions: _Optional[_Iterable[_Union[PolicyVersion, _Mapping]]] = ...) -> None: ...

class WatchPolicyRequest(_message.Message):
    __slots__ = ("since_version",)
    SINCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    since_version: int
    def __init__(self, since_version: _Optional[int] = ...) -> None: ...
