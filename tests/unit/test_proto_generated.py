"""The generated gRPC code is reproducible from the .proto files, and the API follows
its conventions (versioned package, UNSPECIFIED enum zeros, lower_snake_case fields)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from google.protobuf.descriptor import FileDescriptor

from proto.fairpool.v1 import policy_pb2, share_pb2, usage_pb2

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "proto" / "fairpool" / "v1"
FILES = (policy_pb2.DESCRIPTOR, share_pb2.DESCRIPTOR, usage_pb2.DESCRIPTOR)


def _generated_files(folder: Path) -> dict[str, str]:
    return {
        p.name: p.read_text()
        for p in sorted(folder.iterdir())
        if p.name.endswith((".py", ".pyi")) and "_pb2" in p.name
    }


def test_make_proto_regenerates_the_committed_files(tmp_path: Path) -> None:
    # "-o .venv/.installed": use the virtualenv as it is; only the proto rule runs.
    subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "proto", f"PROTO_OUT={tmp_path}"],
        cwd=ROOT,
        check=True,
    )
    fresh = _generated_files(tmp_path / "proto" / "fairpool" / "v1")
    committed = _generated_files(GENERATED)
    assert sorted(fresh) == sorted(committed)
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"run `make proto` and commit: {stale} differ from the .proto files"
    assert len(fresh) == 3 * len(FILES)
    # Prometheus' remote-read messages (messages only, no service).
    remote_read = ROOT / "proto" / "prometheus"
    assert _generated_files(tmp_path / "proto" / "prometheus") == _generated_files(remote_read)
    assert sorted(_generated_files(remote_read)) == ["remote_read_pb2.py", "remote_read_pb2.pyi"]


def test_every_proto_file_is_generated() -> None:
    protos = sorted(p.stem for p in GENERATED.glob("*.proto"))
    assert protos == sorted(Path(f.name).stem for f in FILES)


@pytest.mark.parametrize("file", FILES, ids=lambda f: f.name)
def test_package_is_versioned(file: FileDescriptor) -> None:
    assert file.package == "fairpool.v1"


@pytest.mark.parametrize("file", FILES, ids=lambda f: f.name)
def test_enums_start_with_unspecified_zero(file: FileDescriptor) -> None:
    for enum in file.enum_types_by_name.values():
        prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper()
        zero = enum.values_by_number[0]
        assert zero.name == f"{prefix}_UNSPECIFIED", enum.name
        for value in enum.values:
            assert value.name.startswith(prefix + "_"), value.name


@pytest.mark.parametrize("file", FILES, ids=lambda f: f.name)
def test_fields_are_lower_snake_case(file: FileDescriptor) -> None:
    for message in file.message_types_by_name.values():
        for field in message.fields:
            assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", field.name), (
                f"{message.name}.{field.name}"
            )
