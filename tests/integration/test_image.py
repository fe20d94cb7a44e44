"""fairpool's image (Containerfile) builds with buildah (`make image`) FROM a base made of
Debian's packages (`make image-test-base`: no registry image can be pulled here), and the
commands the chart runs start inside it, as the unprivileged user the chart expects."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.controlplane.layout import REPO_ROOT, cache_dir

# A cold build (no cached layers: every dependency downloaded and installed, each layer
# a full copy under vfs) takes a quarter of an hour on a loaded two-core machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]

TEST_BASE = "localhost/fairpool-test-base:bookworm"
IMAGE = "localhost/fairpool:test"


def _buildah(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    store = cache_dir() / "image"
    command = [
        "buildah",
        "--root",
        str(store / "storage"),
        "--runroot",
        str(store / "run"),
        "--storage-driver",
        "vfs",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if check:
        assert done.returncode == 0, f"buildah {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def image() -> str:
    done = subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(REPO_ROOT),
            "image-test-base",
            "image",
            f"CACHE={cache_dir()}",
            f"IMAGE_BASE={TEST_BASE}",
            f"IMAGE={IMAGE}",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "MAKEFLAGS": ""},
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return IMAGE


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[str]:
    name = _buildah("from", "--pull=never", image).stdout.strip()
    try:
        yield name
    finally:
        _buildah("rm", name)


def _run(container: str, *command: str) -> str:
    return _buildah("run", "--isolation", "chroot", container, "--", *command).stdout


def test_fairpool_commands_start_in_the_image(container: str) -> None:
    version = _run(container, "fairpool", "--version")
    assert "version 0.1.0" in version
    assert "--policy-object" in _run(container, "fairpool", "run", "--help")
    assert "--watch" in _run(container, "fairpool", "meter", "--help")


def test_image_runs_the_compiled_engine(container: str) -> None:
    # FAIRPOOL_ENGINE=compiled refuses to import an engine whose compiled modules are
    # missing or were compiled from other sources; the module's file says which loaded.
    out = _run(
        container,
        "/usr/bin/env",
        "FAIRPOOL_ENGINE=compiled",
        "python",
        "-c",
        "import scheduler.engine.cycle as c, scheduler.engine_build as b; "
        "print(b.kind(), c.__file__)",
    )
    kind, path = out.split()
    assert kind == "compiled"
    assert path.startswith("/opt/fairpool/lib/") and path.endswith(".so"), path
    # The build's tools left with the build stage.
    listing = _run(container, "/bin/sh", "-c", "ls /opt/fairpool/lib/python3*/site-packages")
    assert "mypy" not in listing.split() and "setuptools" not in listing.split()


def test_image_runs_unprivileged_with_fairpool_as_entrypoint(image: str) -> None:
    config = json.loads(_buildah("inspect", "--type", "image", image).stdout)["OCIv1"]["config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["fairpool"]
    assert config["WorkingDir"] == "/var/lib/fairpool"


def test_image_has_no_build_tools(container: str) -> None:
    # Only what running needs: no pip, no compiler, no source tree.
    listing = _run(
        container, "/bin/sh", "-c", "ls /opt/fairpool/bin; ls / ; command -v gcc || true"
    )
    assert "pip" not in listing.split()
    assert "src" not in listing.split()
    assert "/gcc" not in listing
