"""The API benchmark and the soak time a paced call from when it was due."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from bench import bench_api
from bench.bench_soak import ClientLog, SoakConfig, _caller
from proto.fairpool.v1 import share_pb2, share_pb2_grpc


class _SlowFirst(share_pb2_grpc.ShareServiceServicer):
    """Answers at once, but for the first call, which takes 0.5 s (a stalled server)."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def _answer(self) -> None:
        with self.lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            time.sleep(0.5)

    def GetEntitlements(self, request: Any, context: Any) -> Any:
        self._answer()
        return share_pb2.GetEntitlementsResponse()

    def ExplainPending(self, request: Any, context: Any) -> Any:
        self._answer()
        return share_pb2.ExplainPendingResponse()


@pytest.fixture
def target() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    share_pb2_grpc.add_ShareServiceServicer_to_server(_SlowFirst(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


def test_a_paced_call_sent_late_behind_a_slow_one_counts_its_delay(target: str) -> None:
    # One client due every 0.1 s; its first call takes 0.5 s, so its second, due at
    # 0.1 s, goes out at 0.5 s: a caller at that rate would have waited at least 0.4 s.
    load = bench_api.Load(
        {"GetEntitlements": [], "ExplainPending": []},
        {"GetEntitlements": 0, "ExplainPending": 0},
        1.0,
    )
    until = time.monotonic() + 1.0
    asyncio.run(bench_api._client(target, ["job-0"], until, 0, load, 0.1))
    assert load.errors == {"GetEntitlements": 0, "ExplainPending": 0}
    first, second = load.latencies["GetEntitlements"][:2]
    assert first >= 0.5
    assert second >= 0.35


def test_each_client_calls_one_method(target: str) -> None:
    # Half the clients poll each method: a GetEntitlements is never timed behind its own
    # client's ExplainPending (seed 0 asks for shares, seed 1 explains).
    for seed, method in ((0, "GetEntitlements"), (1, "ExplainPending")):
        load = bench_api.Load(
            {"GetEntitlements": [], "ExplainPending": []},
            {"GetEntitlements": 0, "ExplainPending": 0},
            0.7,
        )
        until = time.monotonic() + 0.7
        asyncio.run(bench_api._client(target, ["job-0"], until, seed, load, 0.1))
        other = "ExplainPending" if method == "GetEntitlements" else "GetEntitlements"
        assert load.latencies[method] and not load.latencies[other]


def test_a_soak_call_sent_late_behind_a_slow_one_counts_its_delay(target: str) -> None:
    # The same in the soak's clients; seed 4 draws GetEntitlements twice first.
    log = ClientLog()
    started = time.monotonic()
    config = SoakConfig(clients=1, rate=10.0)
    asyncio.run(_caller(target, config, 4, started, started + 0.8, log))
    first, second = log.latencies[(0, "GetEntitlements")][:2]
    assert first >= 0.5
    assert second >= 0.35


async def _slow_to_connect(target: str, delay: float) -> asyncio.Server:
    """A TCP proxy to `target` that takes `delay` to open each connection."""
    host, port = target.rsplit(":", 1)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(delay)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return await asyncio.start_server(accept, "127.0.0.1", 0)


def test_connecting_is_not_timed_as_a_call(target: str) -> None:
    # A client's channel is connected before its first call is timed: 0.4 s to connect
    # is not the server's answer time.
    load = bench_api.Load(
        {"GetEntitlements": [], "ExplainPending": []},
        {"GetEntitlements": 0, "ExplainPending": 0},
        1.0,
    )

    async def run() -> None:
        proxy = await _slow_to_connect(target, 0.4)
        port = proxy.sockets[0].getsockname()[1]
        # The first call is the slow one (0.5 s): seed 1 makes it an ExplainPending.
        until = time.monotonic() + 0.6
        await bench_api._client(f"127.0.0.1:{port}", ["job-0"], until, 1, load, 0.0)
        proxy.close()

    asyncio.run(run())
    assert load.latencies["ExplainPending"]
    first = load.latencies["ExplainPending"][0]
    assert 0.5 <= first < 0.8
