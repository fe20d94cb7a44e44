"""The HTML report in a real headless Chromium (Debian's, installed by mk/chromium.mk)
with networking off: it renders, its charts and members are there, the console stays
clean and nothing is fetched. Driven over the DevTools protocol; a screenshot is kept
in out/test-artifacts/.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import websocket

from policies.loader import load_policy
from reports.costmodel import build_month_report
from reports.rendering.render import write_report
from reports.sources.synthetic import demo_nodes, synthetic_month

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "out" / "test-artifacts"
OFFLINE_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--proxy-server=127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--hide-scrollbars",
    "--window-size=1280,2000",
]


@dataclass
class PageVisit:
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    svg_count: int = 0
    text: str = ""
    screenshot: bytes = b""


class Browser:
    """One headless Chromium, driven over the DevTools protocol (loopback only)."""

    def __init__(self, profile: Path) -> None:
        if not Path(CHROMIUM).exists():
            raise RuntimeError(f"{CHROMIUM} missing: run `make chromium` (mk/chromium.mk)")
        self.process = subprocess.Popen(
            [
                CHROMIUM,
                *OFFLINE_FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.port = self._port()
        self._id = 0

    def _port(self) -> int:
        assert self.process.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                break
            match = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if match:
                return int(match.group(1))
        raise RuntimeError("chromium did not open its DevTools port")

    def _page_socket(self) -> websocket.WebSocket:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as r:
            targets = json.load(r)
        page = next(t for t in targets if t["type"] == "page")
        return websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60)

    def _send(self, ws: websocket.WebSocket, method: str, **params: Any) -> int:
        self._id += 1
        ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        return self._id

    def _call(
        self, ws: websocket.WebSocket, visit: PageVisit, method: str, **params: Any
    ) -> dict[str, Any]:
        wanted = self._send(ws, method, **params)
        while True:
            message = json.loads(ws.recv())
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self._event(message, visit)

    @staticmethod
    def _event(message: dict[str, Any], visit: PageVisit) -> None:
        method = message.get("method")
        params = message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            visit.errors.append(
                "Uncaught " + details.get("exception", {}).get("description", details["text"])
            )
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            visit.errors.append(f"console.{params['type']}: {args}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            visit.errors.append(f"log: {params['entry']['text']}")
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith(("file://", "data:", "about:")):
                visit.requests.append(url)

    def visit(self, url: str) -> PageVisit:
        visit = PageVisit()
        ws = self._page_socket()
        try:
            for domain in ("Runtime", "Log", "Network", "Page"):
                self._call(ws, visit, f"{domain}.enable")
            self._call(
                ws,
                visit,
                "Emulation.setDeviceMetricsOverride",
                width=1280,
                height=2000,
                deviceScaleFactor=1,
                mobile=False,
            )
            self._send(ws, "Page.navigate", url=url)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                message = json.loads(ws.recv())
                self._event(message, visit)
                if message.get("method") == "Page.loadEventFired":
                    break
            else:
                raise RuntimeError(f"{url} did not finish loading")
            result = self._call(
                ws,
                visit,
                "Runtime.evaluate",
                expression="JSON.stringify({svg: document.querySelectorAll('svg').length,"
                " text: document.body.innerText})",
                returnByValue=True,
            )
            page = json.loads(result["result"]["value"])
            visit.svg_count = int(page["svg"])
            visit.text = str(page["text"])
            shot = self._call(ws, visit, "Page.captureScreenshot", format="png")
            visit.screenshot = base64.b64decode(shot["data"])
            # late console messages (after load) still count
            ws.settimeout(0.5)
            try:
                while True:
                    self._event(json.loads(ws.recv()), visit)
            except websocket.WebSocketTimeoutException:
                pass
        finally:
            ws.close()
        return visit

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    chromium = Browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    policy = load_policy()
    usage, capacity, reclaim = synthetic_month(policy, "2026-10", demo_nodes(policy, 64))
    # two hours of the 14th (local) never metered: the report must say so
    drop = pd.to_datetime(["2026-10-14T08:00Z", "2026-10-14T09:00Z"])
    usage = usage[~usage["hour"].isin(drop)]
    capacity = capacity[~capacity["hour"].isin(drop)]
    report = build_month_report("2026-10", policy, usage, capacity, reclaim, source="simulation")
    out = tmp_path_factory.mktemp("report") / "2026-10"
    return write_report(report, out)[-1]


def test_report_renders_offline_with_charts_and_a_clean_console(
    browser: Browser, report_html: Path
) -> None:
    visit = browser.visit(report_html.as_uri())
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "report-html.png").write_bytes(visit.screenshot)
    shutil.copy(report_html, ARTIFACTS / "report.html")
    assert visit.errors == []
    assert visit.requests == []
    assert visit.svg_count >= 5
    for member in ("uni-north", "lab-bio", "ai-startup", "physics"):
        assert member in visit.text
    for heading in ("Members", "Settlement", "Usage", "Data coverage", "Invoices"):
        assert heading in visit.text
    assert "data missing for 2 hours on 2026-10-14" in visit.text
    assert "Lent and purchase net" in visit.text
    assert "dividend" not in visit.text.lower()  # no simulation summary: no pooling dividend
    assert visit.screenshot.startswith(b"\x89PNG")
    assert len(visit.screenshot) > 20_000  # a blank page is a few kB


def test_the_checker_sees_console_errors_and_fetches(browser: Browser, tmp_path: Path) -> None:
    """The same checks on a broken page: they must fail it, or they prove nothing."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><p>broken</p>"
        '<img src="https://example.invalid/logo.png">'
        "<script>console.error('boom'); undefinedFunction();</script></body></html>"
    )
    visit = browser.visit(page.as_uri())
    assert any("boom" in e for e in visit.errors)
    assert any("Uncaught" in e and "undefinedFunction" in e for e in visit.errors)
    assert visit.requests == ["https://example.invalid/logo.png"]
    assert visit.svg_count == 0
