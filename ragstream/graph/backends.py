"""The two ways to run Cypher: FalkorDB (embedded default, tests) and Neo4j (production).

Both take a template and its parameters and return rows as lists. A store that cannot be reached
raises ``SinkUnavailable`` or a ``ConnectionError``, which the runtime turns into backpressure.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Protocol

import redis.exceptions

from ragstream.graph.dialect import (
    FALKORDB, FALKORDB_INDEXES, NEO4J, NEO4J_CONSTRAINTS, UNIQUE_LABELS, Dialect,
)
from ragstream.errors import SinkUnavailable

log = logging.getLogger(__name__)

Rows = list[list[Any]]


class CypherBackend(Protocol):
    dialect: Dialect

    async def ensure_schema(self) -> None: ...

    async def write(self, query: str, params: dict[str, Any]) -> Rows: ...

    async def read(self, query: str, params: dict[str, Any]) -> Rows: ...

    async def close(self) -> None: ...


class FalkorBackend:
    """One named graph on a FalkorDB server (Redis with the graph module), through the asyncio
    client. Connection errors are redis ConnectionErrors: backpressure for the runtime.

    The client probes the server (cluster or not, synchronously) when it is built, so it is built
    on first use, off the event loop: a worker starts while FalkorDB is down, and its first
    batches meet ``SinkUnavailable`` (backpressure) until the server is back."""

    dialect = FALKORDB

    def __init__(self, url: str, graph: str, timeout_s: float = 30.0):
        self.graph_name = graph
        self._url, self._timeout_s = url, timeout_s
        self._db = None
        self._graph_handle = None
        self._connecting = asyncio.Lock()

    async def _graph(self):
        if self._graph_handle is None:
            async with self._connecting:
                if self._graph_handle is None:
                    from falkordb.asyncio import FalkorDB

                    try:
                        db = await asyncio.to_thread(
                            FalkorDB.from_url, self._url, socket_timeout=self._timeout_s,
                            socket_connect_timeout=5)
                    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                            OSError) as exc:
                        raise SinkUnavailable(f"falkordb unreachable: {exc}") from exc
                    self._db, self._graph_handle = db, db.select_graph(self.graph_name)
        return self._graph_handle

    async def ensure_schema(self) -> None:
        graph = await self._graph()
        for statement in FALKORDB_INDEXES:
            await self._ignore_existing(graph.query(statement))
        for label in UNIQUE_LABELS:
            await self._ignore_existing(self._db.connection.execute_command(
                "GRAPH.CONSTRAINT", "CREATE", self.graph_name, "UNIQUE", "NODE", label,
                "PROPERTIES", 1, "id"))

    @staticmethod
    async def _ignore_existing(call) -> None:
        try:
            await call
        except redis.exceptions.ResponseError as exc:
            if "already" not in str(exc).lower():
                raise

    async def write(self, query: str, params: dict[str, Any]) -> Rows:
        return (await (await self._graph()).query(params_header(params) + query)).result_set

    async def read(self, query: str, params: dict[str, Any]) -> Rows:
        return (await (await self._graph()).ro_query(params_header(params) + query)).result_set

    async def delete_graph(self) -> None:
        await self._ignore_missing((await self._graph()).delete())

    @staticmethod
    async def _ignore_missing(call) -> None:
        try:
            await call
        except redis.exceptions.ResponseError as exc:
            if "empty key" not in str(exc).lower() and "invalid graph" not in str(exc).lower():
                raise

    async def close(self) -> None:
        if self._db is not None:
            await self._db.connection.aclose()


def params_header(params: dict[str, Any]) -> str:
    """The parameter header FalkorDB reads before a query (``CYPHER `name`=value ...``), which
    is how the falkordb client passes parameters; values never enter the query text.

    A value with no maps in it is written by the json module, in C: FalkorDB reads JSON's
    literals and its string escapes (quote, backslash, \\n \\r \\t \\b \\f) as JSON does,
    and for a large batch the client's per-value Python encoder took a third of the time. Maps
    (JSON's quoted keys are not Cypher), and the \\u00XX escapes JSON writes for other control
    characters (FalkorDB does not read them), go through the client's encoder. Both tests are
    complete: any map in JSON has a quote followed by a colon, which in a string value shows only
    escaped (and then only costs the slower encoder)."""
    if not params:
        return ""
    parts = ["CYPHER "]
    for name, value in params.items():
        try:
            body = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError):
            body = None
        if body is None or '":' in body or "\\u00" in body:
            from falkordb.helpers import stringify_param_value

            body = stringify_param_value(value)
        parts.append(f"`{name}`={body} ")
    return "".join(parts)


class Neo4jBackend:
    """Neo4j over Bolt with the official async driver. The driver pools connections; managed
    transactions (``execute_write``/``execute_read``) retry transient errors (deadlocks, leader
    changes) until ``max_transaction_retry_time``. A server that stays unreachable surfaces as
    ``SinkUnavailable``. Kept thin: no Neo4j server runs here, so only its calls are tested."""

    dialect = NEO4J

    def __init__(self, uri: str, user: str, password: str | None, database: str | None = None,
                 *, driver: Any = None, pool_size: int = 50, retry_time_s: float = 30.0):
        if driver is None:
            import neo4j

            driver = neo4j.AsyncGraphDatabase.driver(
                uri, auth=(user, password or ""), max_connection_pool_size=pool_size,
                max_transaction_retry_time=retry_time_s)
        self._driver = driver
        self._database = database

    async def ensure_schema(self) -> None:
        for statement in NEO4J_CONSTRAINTS:
            await self.write(statement, {})

    async def write(self, query: str, params: dict[str, Any]) -> Rows:
        return await self._run("execute_write", query, params)

    async def read(self, query: str, params: dict[str, Any]) -> Rows:
        return await self._run("execute_read", query, params)

    async def _run(self, mode: str, query: str, params: dict[str, Any]) -> Rows:
        import neo4j.exceptions

        async def work(tx) -> Rows:
            result = await tx.run(query, params)
            return [list(record.values()) async for record in result]

        try:
            async with self._driver.session(database=self._database) as session:
                return await getattr(session, mode)(work)
        except (neo4j.exceptions.ServiceUnavailable, neo4j.exceptions.SessionExpired,
                neo4j.exceptions.TransientError) as exc:  # TransientError: retries ran out
            raise SinkUnavailable(f"neo4j unavailable: {exc}") from exc

    async def close(self) -> None:
        await self._driver.close()
