"""A failing Go build names the binary and the module and shows go's own error."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.controlplane.build import BuildError, GoBinary, build, stale
from tests.controlplane.layout import cache_dir


def test_a_failing_build_says_which_module_and_why(tmp_path: Path) -> None:
    module = tmp_path / "broken"
    module.mkdir()
    (module / "go.mod").write_text("module example.invalid/broken\n\ngo 1.24\n")
    (module / "main.go").write_text("package main\n\nfunc main() { undefinedThing() }\n")
    # An absolute module folder stands in for one under tests/controlplane/go.
    binary = GoBinary("broken", str(module), "example.invalid/broken", ("-s", "-w"))
    with pytest.raises(BuildError) as failed:
        build(binary, cache_dir())
    message = str(failed.value)
    assert "building broken failed in Go module" in message
    assert str(module) in message
    assert "undefinedThing" in message
    assert not (cache_dir() / "controlplane" / "bin" / "broken").exists()


def test_an_empty_cache_needs_every_binary(tmp_path: Path) -> None:
    assert {b.name for b in stale(tmp_path)} == {
        "etcd",
        "kwok",
        "kube-apiserver",
        "kube-scheduler",
        "kubectl",
        "kube-controller-manager",
        "helm",
        "jobset",
        "training-operator",
        "kueue",
    }
