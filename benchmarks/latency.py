"""A loopback proxy in front of PostgreSQL that adds network latency and counts round trips.

    proxy = LatencyProxy(url, latency_ms=1.0)
    proxy.start()
    ... connect to proxy.url ...
    proxy.round_trips        # request/response exchanges seen since the last reset()
    proxy.stop()

Every chunk of bytes is delivered ``latency_ms / 2`` after it arrived, in each
direction, and in order: a request followed by its response costs ``latency_ms`` more,
as on a network with that round-trip time, but a stream (COPY, pipelining) is not
slowed beyond that one delay. A *round trip* is counted each time a client sends after
the server has answered since its previous send: the exchanges a latency is paid for.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from psycopg import conninfo


class LatencyProxy:
    """A TCP listener on 127.0.0.1 forwarding each connection to the server ``url`` names."""

    def __init__(self, url: str, latency_ms: float) -> None:
        params = conninfo.conninfo_to_dict(url)
        self.params = params
        host = str(params.get("host") or "127.0.0.1")
        port = int(params.get("port") or 5432)
        self.unix = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else None
        self.upstream = (host, port)
        self.delay = latency_ms / 2000.0
        self.round_trips = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The connection string that goes through the proxy."""
        params: dict[str, Any] = {k: v for k, v in self.params.items() if v is not None}
        params.update(host="127.0.0.1", port=str(self.port), sslmode="disable")
        return conninfo.make_conninfo(**params)

    def reset(self) -> None:
        with self._lock:
            self.round_trips = 0
            self.connections = 0

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="latency-proxy", daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop(self) -> None:
        """Close the listener and every forwarded connection, then end the thread."""
        loop = self._loop
        if loop is None:
            return

        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(shut(), loop)
        if self._thread is not None:
            self._thread.join(5)
        loop.close()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.unix is not None:
            server_reader, server_writer = await asyncio.open_unix_connection(self.unix)
        else:
            server_reader, server_writer = await asyncio.open_connection(*self.upstream)
        with self._lock:
            self.connections += 1
        state = {"answered": True}  # the server has spoken since the client's last send

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, from_client: bool) -> None:
            queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

            async def deliver() -> None:
                while True:
                    due, data = await queue.get()
                    if not data:
                        writer.close()
                        return
                    wait = due - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    writer.write(data)
                    await writer.drain()

            sender = asyncio.create_task(deliver())
            try:
                while True:
                    data = await reader.read(65536)
                    if from_client and data and state["answered"]:
                        with self._lock:
                            self.round_trips += 1
                        state["answered"] = False
                    elif not from_client and data:
                        state["answered"] = True
                    await queue.put((time.monotonic() + self.delay, data))
                    if not data:
                        break
                await sender
            except (ConnectionError, asyncio.CancelledError):
                sender.cancel()

        try:
            await asyncio.gather(pump(client_reader, server_writer, True), pump(server_reader, client_writer, False),
                                 return_exceptions=True)
        except asyncio.CancelledError:  # the proxy is stopping
            for writer in (client_writer, server_writer):
                writer.close()
