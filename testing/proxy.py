"""A TCP proxy that can cut a store's connections: a real outage as the client sees one (refused
connects, dropped sockets), for stores that run outside the harness's control (the machine's
PostgreSQL). Used by the store conformance suite and the chaos harness's outage."""

from __future__ import annotations

import asyncio
import contextlib


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream``. ``cut()`` drops every connection and
    refuses new ones; ``restore()`` listens again on the same port."""

    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        # and end each connection's task here, not when the event loop closes (asyncio logs a
        # cancelled pipe as an error then)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def restore(self) -> None:
        await self.start()

    @property
    def cut_off(self) -> bool:
        return self._server is None or not self._server.is_serving()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                writer.transport.abort()
                return
            self._writers |= {writer, up_writer}
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            self._writers -= {writer, up_writer}
        finally:
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()
