"""Requests whose bytes do not parse as their message: INVALID_ARGUMENT naming the field.

gRPC parses a request before any of our code runs; a string field that is not UTF-8
text (or bytes that are not protobuf at all) failed there, as INTERNAL "Exception
deserializing request!" with no incident id and a traceback in the log. The handler's
deserializer is wrapped so that a failure becomes an `Undecodable` request, which the
behavior answers with INVALID_ARGUMENT. The field is found by reading the bytes again
with every field unknown (unknown fields are not checked as text) and trying each
string field the message's descriptor names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

LENGTH_DELIMITED = 2
MAX_DEPTH = 16


@dataclass(frozen=True)
class Undecodable:
    """A request that did not parse, and why, naming the field where it can."""

    detail: str


def refuse_undecodable(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """`handler` with a request deserializer that never raises, and a behavior that
    answers a request it could not parse with INVALID_ARGUMENT."""
    parse = handler.request_deserializer
    if parse is None or handler.request_streaming:
        return handler  # no client-streaming methods in fairpool.v1
    descriptor: Descriptor | None = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)

    def deserializer(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError:
            return Undecodable(undecodable_detail(descriptor, data))

    if handler.unary_unary is not None:
        behavior = handler.unary_unary

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, Undecodable):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.detail)
            return behavior(request, context)

        return handler._replace(  # type: ignore[attr-defined,no-any-return]
            request_deserializer=deserializer, unary_unary=unary
        )
    stream_behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]] = handler.unary_stream

    def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        if isinstance(request, Undecodable):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.detail)
        yield from stream_behavior(request, context)

    return handler._replace(  # type: ignore[attr-defined,no-any-return]
        request_deserializer=deserializer, unary_stream=stream
    )


def undecodable_detail(descriptor: Descriptor | None, data: bytes) -> str:
    """What is wrong with `data` as a message of `descriptor`: the first string field
    (a dotted path into nested messages) that is not UTF-8 text, else that the bytes are
    not such a message."""
    name = descriptor.full_name if descriptor is not None else "the method's request"
    if descriptor is not None:
        path = _not_text(descriptor, data, 0)
        if path is not None:
            return f"{path}: not UTF-8 text (a string field must be)"
    return f"request: not a valid {name} message"


def _not_text(descriptor: Descriptor, data: bytes, depth: int) -> str | None:
    if depth > MAX_DEPTH:
        return None
    holder = empty_pb2.Empty()
    try:
        holder.ParseFromString(data)
    except DecodeError:
        return None
    for field in UnknownFieldSet(holder):
        known = descriptor.fields_by_number.get(field.field_number)
        if known is None or field.wire_type != LENGTH_DELIMITED:
            continue
        if known.type == FieldDescriptor.TYPE_STRING:
            try:
                field.data.decode("utf-8")
            except UnicodeDecodeError:
                return known.name
        elif known.type == FieldDescriptor.TYPE_MESSAGE and known.message_type is not None:
            inner = _not_text(known.message_type, field.data, depth + 1)
            if inner is not None:
                return f"{known.name}.{inner}"
    return None
