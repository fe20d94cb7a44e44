"""Loading OpenMetrics into TSDB blocks and running a private Prometheus on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

import psutil


class PrometheusMissing(RuntimeError):
    """prometheus/promtool are not installed (`make system-deps` installs them)."""


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise PrometheusMissing(f"{name} not found; run `make system-deps` (mk/prometheus.mk)")
    return path


def create_blocks(openmetrics: Path, data_dir: Path) -> float:
    """`promtool tsdb create-blocks-from openmetrics` into `data_dir`; returns seconds taken."""
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result = subprocess.run(
        [
            binary("promtool"),
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--quiet",
            str(openmetrics),
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"promtool failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
        )
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrometheusServer:
    """A Prometheus process serving `data_dir` on 127.0.0.1 with no scrape targets.

    `start()` waits until /-/ready answers; `stop()` ends it with SIGTERM (SIGKILL after
    a timeout). It can be stopped and started again on the same port, which is how tests
    take Prometheus away in the middle of a metering run."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        flags: tuple[str, ...] = (),
        config: str = "",
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.tls = tls
        """(certificate, key) to serve https with (`--web.config.file`)."""
        self.port = port or free_port()
        self.flags = flags
        """Extra command-line flags (e.g. a remote-read sample limit)."""
        self.config = config
        """Extra top-level configuration (YAML), e.g. a `remote_read` section."""
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"prometheus-{self.port}.log"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        if self.process is not None:
            return self
        config = self.data_dir.parent / "prometheus-test.yml"
        config.write_text("global:\n  scrape_interval: 30s\nscrape_configs: []\n" + self.config)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        web: list[str] = []
        if self.tls is not None:
            web_config = self.data_dir.parent / "prometheus-web.yml"
            cert, key = self.tls
            web_config.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
            web = [f"--web.config.file={web_config}"]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.data_dir}",
                "--storage.tsdb.retention.time=100y",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--query.max-samples=200000000",
                "--log.level=warn",
                *web,
                *self.flags,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                self.process = None
                raise RuntimeError(f"prometheus exited at start-up:\n{tail}")
            try:
                # Readiness only: whether the certificate is trusted is the tests' to see.
                unchecked = ssl._create_unverified_context() if self.tls else None
                with urllib.request.urlopen(
                    f"{self.url}/-/ready", timeout=2, context=unchecked
                ) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout}s (log {self.log_path})")

    def stop(self, timeout: float = 30.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def rss_bytes(self) -> int:
        if self.process is None:
            return 0
        try:
            return int(psutil.Process(self.process.pid).memory_info().rss)
        except psutil.NoSuchProcess:
            return 0

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
