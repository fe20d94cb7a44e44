"""A failing Go build names the binary and the module and shows go's own error; builds
sharing one cache wait for each other."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tests.controlplane.build import BuildError, GoBinary, build, ensure_built, stale
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


def _build_tiny(module: str, cache: str, start: Any, log: str) -> None:
    binary = GoBinary("tiny", module, "example.invalid/tiny", ("-s", "-w"))
    start.wait()
    with open(log, "w") as out:
        ensure_built(
            Path(cache),
            names=["tiny"],
            console=Console(file=out, force_terminal=False),
            binaries=(binary,),
        )


def test_two_builds_into_one_cache_build_once_and_both_succeed(tmp_path: Path) -> None:
    """CI's clones share one cache, and a test session builds what it lacks: two builds
    of the same binary at once both wrote `.<name>.partial`, and the second to finish
    found it renamed away (FileNotFoundError), failing `make test`."""
    module = tmp_path / "tiny"
    module.mkdir()
    (module / "go.mod").write_text("module example.invalid/tiny\n\ngo 1.24\n")
    (module / "main.go").write_text("package main\n\nfunc main() {}\n")
    (module / "go.sum").write_text("")
    cache = tmp_path / "cache"
    # The shared Go caches: the standard library is compiled once, not in each test.
    shared = cache_dir() / "go"
    shared.mkdir(parents=True, exist_ok=True)
    cache.mkdir()
    (cache / "go").symlink_to(shared)
    context = mp.get_context("spawn")
    start = context.Event()
    logs = [tmp_path / f"build-{i}.log" for i in range(2)]
    builders = [
        context.Process(target=_build_tiny, args=(str(module), str(cache), start, str(log)))
        for log in logs
    ]
    for builder in builders:
        builder.start()
    start.set()
    for builder in builders:
        builder.join(300)
    said = [log.read_text() for log in logs]
    assert [b.exitcode for b in builders] == [0, 0], said
    assert sum(text.count("built tiny in") for text in said) == 1, said
    assert (cache / "controlplane" / "bin" / "tiny").is_file()
    assert not list((cache / "controlplane" / "bin").glob(".tiny.partial*"))
