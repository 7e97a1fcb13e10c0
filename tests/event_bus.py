"""Real event buses for the events tests: an HTTP event proxy on 127.0.0.1 that keeps what
it is sent, and a redis-server of the test's own whose BullMQ queue is read back with the
``bullmq`` library."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from bullmq import Queue


@dataclass
class Received:
    """One request the proxy was sent."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Proxy:
    """An event proxy: answers 202 as the core's ``/internal/events/publish`` does, or, when
    ``down``, 503 with the core's error body; with ``hold`` set, keeps each request
    waiting (after noting it) until ``hold`` is cleared."""

    url: str
    received: list[Received] = field(default_factory=list)
    down: bool = False
    hold: threading.Event | None = None
    seen: threading.Event = field(default_factory=threading.Event)

    @property
    def envelopes(self) -> list[dict[str, Any]]:
        """What it took, in order (requests it refused are not counted)."""
        return [r.body for r in self.received if r.method == "POST" and not r.headers.get("x-refused")]


@contextmanager
def event_proxy(path: str = "/internal/events/publish") -> Iterator[Proxy]:
    """A proxy on a free port of 127.0.0.1, stopped when the block ends."""
    state: dict[str, Proxy] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            proxy = state["proxy"]
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length).decode("utf-8"))
            headers = {k.lower(): v for k, v in self.headers.items()}
            if proxy.down:
                headers["x-refused"] = "1"
            proxy.received.append(Received("POST", self.path, headers, body))
            proxy.seen.set()
            if proxy.hold is not None:
                proxy.hold.wait(60)
            status, answer = ((503, {"error": "Failed to enqueue workflow event."}) if proxy.down else
                              (202, {"data": {"acceptedAt": "2026-01-01T00:00:00.000Z", "event": body}}))
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state["proxy"] = Proxy(f"http://127.0.0.1:{server.server_address[1]}{path}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["proxy"]
    finally:
        if state["proxy"].hold is not None:
            state["proxy"].hold.set()
        server.shutdown()
        server.server_close()


def free_port() -> int:
    """A TCP port of 127.0.0.1 nothing listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RedisServer:
    """A redis-server of the test's own (never the machine's), in a directory of its own."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None


@contextmanager
def redis_server(directory: Path, *, started: bool = True) -> Iterator[RedisServer]:
    """A redis-server on a free port (``started=False``: not yet, so the port refuses)."""
    if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
        # Every machine the suite runs on has it (the CI machines' image does): a missing
        # binary is a broken machine, not a reason to let the queue's tests pass unseen.
        pytest.fail("redis-server is not installed: the BullMQ delivery tests need it (apt install redis-server)")
    directory.mkdir(parents=True, exist_ok=True)
    server = RedisServer(free_port(), directory)
    if started:
        server.start()
    try:
        yield server
    finally:
        server.stop()


def queued_jobs(url: str, queue: str = "apphub_event_ingress_queue") -> list[tuple[str, str, Any]]:
    """Every job waiting in the BullMQ ``queue``, oldest first: (name, id, data), read with bullmq."""
    async def read() -> list[tuple[str, str, Any]]:
        reader = Queue(queue, {"connection": url})
        try:
            jobs = await reader.getWaiting()
            return [(job.name, job.id, job.data) for job in jobs]
        finally:
            await reader.close()

    return asyncio.run(read())
