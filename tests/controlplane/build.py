"""Building the control-plane binaries from the pinned Go wrapper modules.

This is the one place the build commands are written down: `make controlplane` and
`python -m tests.controlplane up` both call `ensure_built`. A binary is rebuilt when it is
missing or when its stamp (go.mod, go.sum, the command, the Go version) changed; with
the Go caches under the build cache a rebuild of an unchanged module takes seconds.

Several builds may share one cache (CI's clones on one machine share `~/.cache/fairpool`,
and a test session builds what it lacks): `ensure_built` holds a lock on the bin folder
while it builds, and looks again at what is missing once it has it, so the second waits
for the first and builds nothing the first built. Both wrote `.<name>.partial`, and the
one that finished second found it renamed away (`FileNotFoundError`).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from tests.controlplane.layout import GO_MODULES_DIR, bin_dir, cache_dir

KUBERNETES_VERSION = "v1.34.4"
_KUBE_MAJOR, _KUBE_MINOR = KUBERNETES_VERSION.removeprefix("v").split(".")[:2]

# kube-apiserver and the client refuse or misreport a binary without a version, and kwok
# reads the server version, so the Kubernetes binaries get the release's version stamped.
_KUBE_LDFLAGS = (
    "-s",
    "-w",
    f"-X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION}",
    f"-X k8s.io/component-base/version.gitMajor={_KUBE_MAJOR}",
    f"-X k8s.io/component-base/version.gitMinor={_KUBE_MINOR}",
    "-X k8s.io/component-base/version.gitTreeState=clean",
)
_PLAIN_LDFLAGS = ("-s", "-w")
HELM_VERSION = "v3.22.0"


def _client_go_minor(module: str) -> str:
    go_mod = (GO_MODULES_DIR / module / "go.mod").read_text()
    found = re.search(r"^\s*k8s\.io/client-go v0\.(\d+)\.", go_mod, re.M)
    if found is None:
        raise RuntimeError(f"{GO_MODULES_DIR / module / 'go.mod'} requires no k8s.io/client-go")
    return found.group(1)


# As helm's own release build: its version, and the Kubernetes release it renders for
# when no cluster is asked (that of its client-go), so `helm template` passes the
# chart's kubeVersion check.
_HELM_KUBE_MINOR = _client_go_minor("helm")
_HELM_LDFLAGS = (
    "-s",
    "-w",
    f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
    "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1",
    f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={_HELM_KUBE_MINOR}",
    "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1",
    f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor={_HELM_KUBE_MINOR}",
)


@dataclass(frozen=True)
class GoBinary:
    """One binary: its wrapper module (a folder under tests/controlplane/go) and package."""

    name: str
    module: str
    package: str
    ldflags: tuple[str, ...]

    @property
    def module_dir(self) -> Path:
        return GO_MODULES_DIR / self.module


CONTROL_PLANE: tuple[GoBinary, ...] = (
    GoBinary("etcd", "etcd", "go.etcd.io/etcd/server/v3", _PLAIN_LDFLAGS),
    GoBinary("kwok", "kwok", "sigs.k8s.io/kwok/cmd/kwok", _PLAIN_LDFLAGS),
    GoBinary("kube-apiserver", "kubernetes", "k8s.io/kubernetes/cmd/kube-apiserver", _KUBE_LDFLAGS),
    GoBinary("kube-scheduler", "kubernetes", "k8s.io/kubernetes/cmd/kube-scheduler", _KUBE_LDFLAGS),
    GoBinary("kubectl", "kubernetes", "k8s.io/kubernetes/cmd/kubectl", _KUBE_LDFLAGS),
    # Its own wrapper module of the same k8s.io/kubernetes release: it needs modules the
    # others do not, and a shared go.mod would change the others' stamps.
    GoBinary(
        "kube-controller-manager",
        "kube-controller-manager",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        _KUBE_LDFLAGS,
    ),
    # Lints and renders the chart (deploy/helm/fairpool) for the chart and install tests.
    GoBinary("helm", "helm", "helm.sh/helm/v3/cmd/helm", _HELM_LDFLAGS),
)
# The workload controllers the end-to-end tests run beside the control plane
# (tests/controlplane/controllers.py): they turn a JobSet, a PyTorchJob or a Kueue-admitted
# Job into pods as they would in a real cluster.
CONTROLLERS: tuple[GoBinary, ...] = (
    GoBinary("jobset", "jobset", "sigs.k8s.io/jobset", _PLAIN_LDFLAGS),
    GoBinary(
        "training-operator",
        "training-operator",
        "github.com/kubeflow/training-operator/cmd/training-operator.v1",
        _PLAIN_LDFLAGS,
    ),
    GoBinary("kueue", "kueue", "sigs.k8s.io/kueue/cmd/kueue", _PLAIN_LDFLAGS),
)
CONTROL_PLANE_NAMES = tuple(b.name for b in CONTROL_PLANE)
BINARIES = CONTROL_PLANE + CONTROLLERS
BINARY_NAMES = tuple(b.name for b in BINARIES)
_TAIL_LINES = 40


class BuildError(RuntimeError):
    """A `go build` that failed: which binary, which module, and the end of go's output."""

    def __init__(self, binary: GoBinary, command: list[str], output: str) -> None:
        self.binary = binary
        self.command = command
        self.output = output
        tail = "\n".join(output.rstrip().splitlines()[-_TAIL_LINES:])
        super().__init__(
            f"building {binary.name} failed in Go module {binary.module_dir} "
            f"(package {binary.package}):\n$ {' '.join(command)}\n{tail}"
        )


def go_environment(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GOTOOLCHAIN="local",
        GOMODCACHE=str(cache / "go" / "mod"),
        GOCACHE=str(cache / "go" / "build"),
        CGO_ENABLED="0",
        GOFLAGS="-mod=readonly -buildvcs=false",
    )
    return env


def build_command(binary: GoBinary, output: Path) -> list[str]:
    return [
        "go",
        "build",
        "-trimpath",
        "-ldflags",
        " ".join(binary.ldflags),
        "-o",
        str(output),
        binary.package,
    ]


def _go_version() -> str:
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("the Go toolchain is not on PATH (`go` not found); install Go 1.24+")
    result = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def _stamp(binary: GoBinary, go_version: str) -> str:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((binary.module_dir / name).read_bytes())
    digest.update(" ".join(build_command(binary, Path(binary.name))).encode())
    digest.update(go_version.encode())
    return digest.hexdigest()


def _stamp_path(binary: GoBinary, cache: Path) -> Path:
    return bin_dir(cache) / f".{binary.name}.stamp"


def binary_path(name: str, cache: Path | None = None) -> Path:
    return bin_dir(cache) / name


def stale(
    cache: Path | None = None,
    names: Iterable[str] = BINARY_NAMES,
    binaries: Sequence[GoBinary] = BINARIES,
) -> list[GoBinary]:
    """The binaries that are missing or were built from other sources or flags."""
    root = cache or cache_dir()
    version = _go_version()
    wanted = set(names)
    out: list[GoBinary] = []
    for binary in binaries:
        if binary.name not in wanted:
            continue
        stamp = _stamp_path(binary, root)
        built = binary_path(binary.name, root).is_file() and stamp.is_file()
        if not built or stamp.read_text().strip() != _stamp(binary, version):
            out.append(binary)
    return out


def build(binary: GoBinary, cache: Path) -> float:
    """Build one binary into the bin folder (atomically) and return the wall time."""
    target = binary_path(binary.name, cache)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Its own name per process: `build` may be called without `ensure_built`'s lock.
    partial = target.with_name(f".{binary.name}.partial.{os.getpid()}")
    command = build_command(binary, partial)
    started = time.monotonic()
    result = subprocess.run(
        command,
        cwd=binary.module_dir,
        env=go_environment(cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BuildError(binary, command, result.stdout)
    partial.replace(target)
    _stamp_path(binary, cache).write_text(_stamp(binary, _go_version()) + "\n")
    return time.monotonic() - started


@contextmanager
def _building(cache: Path, out: Console) -> Iterator[None]:
    """The cache's bin folder to this process alone until the block ends."""
    folder = bin_dir(cache)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".build.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Said, or a wait of many minutes behind a cold build looks hung.
            out.print(f"waiting for another build into {folder} ...", soft_wrap=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_built(
    cache: Path | None = None,
    *,
    names: Iterable[str] = BINARY_NAMES,
    force: bool = False,
    console: Console | None = None,
    binaries: Sequence[GoBinary] = BINARIES,
) -> dict[str, Path]:
    """Build what is missing (or everything with `force`); return name -> binary path."""
    root = cache or cache_dir()
    out = console or Console(stderr=True)
    wanted = list(names)
    if not force and not stale(root, wanted, binaries):
        return {name: binary_path(name, root) for name in wanted}  # no lock to wait for
    with _building(root, out):
        todo = [b for b in binaries if b.name in wanted] if force else stale(root, wanted, binaries)
        _build_all(todo, root, out)
    return {name: binary_path(name, root) for name in wanted}


def _build_all(todo: Sequence[GoBinary], root: Path, out: Console) -> None:
    for binary in todo:
        activity = f"building {binary.name} from {binary.module_dir.name}/go.mod"
        if not out.is_terminal:
            # No spinner in a log: say what runs, or a cold build looks hung for minutes.
            out.print(f"{activity} ...", soft_wrap=True)
        with out.status(activity):
            seconds = build(binary, root)
        out.print(
            f"built {binary.name} in {seconds:.1f}s -> {binary_path(binary.name, root)}",
            soft_wrap=True,
        )
