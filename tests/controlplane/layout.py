"""Where the control plane's sources, build outputs and running clusters live.

The build cache belongs to the Makefile's `CACHE` folder (`.cache` in the repository
unless overridden); the Python side reads the same place from `FAIRPOOL_CACHE`.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent.parent
GO_MODULES_DIR = PACKAGE_DIR / "go"
STAGES_DIR = PACKAGE_DIR / "stages"
STAGE_FILES = (STAGES_DIR / "node-stages.yaml", STAGES_DIR / "pod-stages.yaml")
RBAC_MANIFEST = PACKAGE_DIR / "rbac.yaml"


def cache_dir() -> Path:
    """The build cache: `$FAIRPOOL_CACHE`, else `.cache` in the repository."""
    configured = os.environ.get("FAIRPOOL_CACHE")
    return Path(configured).resolve() if configured else REPO_ROOT / ".cache"


def bin_dir(cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "controlplane" / "bin"


def default_cluster_dir(cache: Path | None = None) -> Path:
    """Where `make cluster-up` keeps certificates, kubeconfigs, logs and its state file."""
    return (cache or cache_dir()) / "controlplane" / "cluster"
