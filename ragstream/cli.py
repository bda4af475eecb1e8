"""The ``ragstream`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ragstream import logs
from ragstream.config import Settings
from ragstream.cli_graph import graph_app

app = typer.Typer(help="ragstream: event-driven workers that keep RAG and KG stores fresh.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
dlq_app = typer.Typer(help="Dead-letter topics.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(graph_app, name="graph")
console = Console(stderr=True)

STACK_ENV = "stack.env"


def _data_dir() -> Path:
    return Path(os.environ.get("RAGSTREAM_DATA_DIR", ".ragstream"))


def settings() -> Settings:
    """Settings from the environment; a running ``ragstream up`` fills in where it is silent."""
    return Settings.from_env({k: v for k, v in _stack_env().items() if k not in os.environ})


def _stack_env() -> dict[str, str]:
    """The environment of a running ``ragstream up`` (empty: none runs)."""
    stack_file = _data_dir() / STACK_ENV
    if stack_file.exists():
        stack = json.loads(stack_file.read_text())
        if _pid_alive(stack.get("pid", -1)):
            return stack["env"]
    return {}


@app.callback()
def _hand_down_settings(ctx: typer.Context) -> None:
    # command groups in their own modules (ragstream graph) load settings through ctx.obj, so
    # they need not import this module back
    ctx.obj = settings


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except (OSError, ValueError):
        return False


# workers and the stack --------------------------------------------------------------------------


@app.command()
def worker(name: str) -> None:
    """Run one worker until SIGTERM (then it drains, commits and leaves its group)."""
    from ragstream.runner import serve
    from workers import load

    cfg = settings()
    logs.configure(cfg.log_level)
    asyncio.run(serve(load(name)(), cfg))


@app.command()
def up(
    workers: Annotated[str, typer.Option(help="Comma-separated workers to run.")] = "",
    duration: Annotated[float, typer.Option("--for", help="Stop after this many seconds.")] = 0,
    live: Annotated[bool, typer.Option(help="Live status table (off: a status line per 5 s).")]
    = sys.stderr.isatty(),
    triton: Annotated[bool, typer.Option(help="Also start Triton (PyTriton, from .venv-triton) "
                                         "and the batch_inference worker.")] = False,
) -> None:
    """Start the embedded stack (Tansu, FalkorDB, the workers) and show their live status."""
    from ragstream.bringup import StopSignal, running_stack
    from workers import default_stack

    names = ([w.strip() for w in workers.split(",") if w.strip()]
             or default_stack(settings().store.fresh_stores))
    if triton and "batch_inference" not in names:
        names.append("batch_inference")
    data_dir = _data_dir()
    stop = StopSignal()
    with running_stack(names, data_dir, triton=triton, announce=data_dir / STACK_ENV,
                       say=console.print) as stack:
        console.print(f"[bold]ragstream up[/]: kafka {stack.settings.kafka_bootstrap}, "
                      f"workers {', '.join(names)}; data in {data_dir}/. Ctrl-C stops.")
        until = time.monotonic() + duration if duration > 0 else float("inf")
        if live:
            with Live(console=console, refresh_per_second=2) as view:
                while not stop.requested and time.monotonic() < until:
                    view.update(_status_table(stack.supervisor.poll()))
                    stop.wait(1)
        else:
            while not stop.requested and time.monotonic() < until:
                for s in stack.supervisor.poll():
                    console.print(f"{s.name} {s.state} pid={s.pid} processed={s.processed:.0f} "
                                  f"rate={s.events_per_s:.1f}/s lag={s.lag:.0f} "
                                  f"dlq={s.dead_lettered:.0f} restarts={s.restarts}")
                stop.wait(min(5, until - time.monotonic()))
    console.print("stopped cleanly")




def _status_table(statuses) -> Table:
    table = Table(title="ragstream workers")
    for col in ("worker", "state", "pid", "events/s", "processed", "lag", "DLQ", "restarts"):
        table.add_column(col, justify="right" if col not in ("worker", "state") else "left")
    for s in statuses:
        table.add_row(s.name, s.state, str(s.pid or "-"), f"{s.events_per_s:.1f}",
                      f"{s.processed:.0f}", f"{s.lag:.0f}", f"{s.dead_lettered:.0f}",
                      str(s.restarts))
    return table


@app.command()
def demo(
    limit: Annotated[int, typer.Option(help="Reuters articles to publish.")] = 200,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the results.")] = 180,
    query: Annotated[str, typer.Option(help="The search to answer at the end.")]
    = "oil prices and production",
) -> None:
    """Publish a slice of Reuters-21578 to documents.v1 and follow the work as it happens: echo
    receipts, chunks embedded and searchable, entities linked, the GCN refreshed, then a search.

    Uses the stack of a running ``ragstream up``; with none running, it runs its own."""
    from ragstream.demo import run

    from ragstream.errors import Unavailable

    say = functools.partial(console.print, soft_wrap=True, markup=False)  # one line per status
    if os.environ.get("RAGSTREAM_KAFKA_BOOTSTRAP") or "RAGSTREAM_KAFKA_BOOTSTRAP" in _stack_env():
        cfg = settings()
        try:
            done = asyncio.run(run(cfg, limit, wait, query, say))
        except Unavailable as exc:  # a stack named but not running: say so, not a traceback
            say(f"no stack answers at {cfg.kafka_bootstrap} ({exc}). Start one with "
                "`ragstream up`, or unset RAGSTREAM_KAFKA_BOOTSTRAP and the demo runs its own.")
            raise typer.Exit(1) from None
    else:
        from ragstream.bringup import running_stack
        from workers import default_stack

        with running_stack(default_stack(settings().store.fresh_stores), _data_dir(),
                           say=console.print) as stack:
            done = asyncio.run(run(stack.settings, limit, wait, query, say))
    if not done:
        raise typer.Exit(1)


# producers and consumers ------------------------------------------------------------------------


@app.command()
def publish(
    file: Annotated[Path | None, typer.Argument(help="JSON lines of envelopes; stdin if omitted.")]
    = None,
    topic_name: Annotated[str | None, typer.Option("--topic", help="Override the topic.")] = None,
) -> None:
    """Validate and publish envelopes from JSON lines. Invalid lines are reported, never sent."""
    from producers.backfill import publish_lines

    cfg = settings()
    stream = file.open(encoding="utf-8") if file else sys.stdin
    sent, errors = asyncio.run(publish_lines(cfg, stream, topic_name))
    for line_no, reason in errors:
        console.print(f"[red]line {line_no}[/]: {reason}")
    console.print(f"published {sent}, rejected {len(errors)}")
    if errors:
        raise typer.Exit(1)


@app.command()
def backfill(
    path: Path,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint.")] = True,
    version: Annotated[int, typer.Option(help="Document version for files in a folder.")] = 1,
) -> None:
    """Publish a folder of text files or a JSONL of envelopes, resumably, with a progress bar."""
    from producers.backfill import backfill as run_backfill

    cfg = settings()
    sent, skipped, errors = asyncio.run(run_backfill(cfg, path, resume=resume, version=version,
                                                     console=console))
    console.print(f"published {sent}, already done {skipped}, rejected {len(errors)}")
    for where, reason in errors[:20]:
        console.print(f"[red]{where}[/]: {reason}")
    if errors:
        raise typer.Exit(1)


@app.command()
def tail(
    topic_name: Annotated[str, typer.Argument(metavar="TOPIC")],
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest event.")] = False,
    limit: Annotated[int, typer.Option(help="Stop after this many events (0: never).")] = 0,
    event_type: Annotated[list[str] | None, typer.Option(
        "--type", help="Only these event types (repeatable).")] = None,
    subject: Annotated[str | None, typer.Option(
        help="Only subjects matching this glob, e.g. 'reuters-1*'.")] = None,
    where: Annotated[list[str] | None, typer.Option(
        help="Only events whose data field equals a value: field=value (repeatable).")] = None,
    reason: Annotated[str | None, typer.Option(
        help="A dead-letter topic: only dead letters with this reason.")] = None,
) -> None:
    """Print a topic's events as JSON lines, for downstream consumers and debugging. A
    dead-letter topic (``*.dlq``) prints each dead letter's error headers and the head of its
    bytes."""
    from consumers.subscribe import EventFilter, records, subscribe
    from schemas.catalogue import DLQ_SUFFIX

    cfg = settings()
    dead_letters = topic_name.endswith(DLQ_SUFFIX)
    if dead_letters and (event_type or subject or where):
        raise typer.BadParameter("--type, --subject and --where filter events; a dead letter "
                                 "need not decode: filter it with --reason")
    if reason and not dead_letters:
        raise typer.BadParameter("--reason filters a dead-letter topic (*.dlq)")
    wanted = EventFilter.parse(event_type or [], subject, where or [])

    async def lines():
        if dead_letters:
            from producers.dlq import describe

            async for record in records(cfg, topic_name, from_beginning=from_beginning):
                letter = describe(record)
                if reason is None or letter["headers"].get("x-error-reason") == reason:
                    yield letter
            return
        async for envelope, record in subscribe(cfg, topic_name, from_beginning=from_beginning):
            if wanted.matches(envelope):
                yield {"partition": record.partition, "offset": record.offset,
                       "event": envelope.model_dump(mode="json")}

    async def run() -> None:
        n = 0
        async with contextlib.aclosing(lines()) as stream:
            async for line in stream:
                print(json.dumps(line), flush=True)
                n += 1
                if limit and n >= limit:
                    return

    asyncio.run(run())


@dlq_app.command("replay")
def dlq_replay(
    topic_name: Annotated[str, typer.Argument(metavar="TOPIC", help="e.g. documents.v1.dlq")],
    reason: Annotated[str | None, typer.Option(help="Only dead letters with this reason.")] = None,
    limit: Annotated[int, typer.Option(help="Replay at most this many (0: all).")] = 0,
) -> None:
    """Re-publish dead letters to their original topic, unchanged, after a fix."""
    from producers.dlq import replay

    cfg = settings()
    replayed, passed = asyncio.run(replay(cfg, topic_name, reason=reason, limit=limit))
    console.print(f"replayed {replayed}, passed over {passed} (other reasons)")


@app.command()
def topics(
    create: Annotated[bool, typer.Option(help="Create missing topics.")] = False,
    workers: Annotated[str, typer.Option(
        help="Deployed workers whose queues to declare (RabbitMQ; Kafka needs none).")] = "",
) -> None:
    """The topic catalogue (and, with --create, make sure the broker has every topic)."""
    from schemas.catalogue import TOPICS, all_topic_names

    table = Table(title="topic catalogue")
    for col in ("topic", "version", "events", "dead letters", "description"):
        table.add_column(col)
    for spec in TOPICS.values():
        table.add_row(spec.name, str(spec.version), "\n".join(spec.events), spec.dlq,
                      spec.description)
    Console().print(table)
    if create:
        from ragstream.transport import ensure_topics

        from producers.reembed import reembed_group
        from workers import consumer_groups, default_stack

        cfg = settings()
        names = ([w.strip() for w in workers.split(",") if w.strip()]
                 or default_stack(cfg.store.fresh_stores))
        asyncio.run(ensure_topics(cfg, all_topic_names(), cfg.topic_partitions,
                                  consumer_groups(names, cfg.group_id) | reembed_group(cfg)))


# retrieval --------------------------------------------------------------------------------------


@app.command()
def search(
    query: str,
    k: Annotated[int, typer.Option("-k", help="How many results.")] = 10,
    dense: Annotated[float, typer.Option(help="Fusion weight of the dense ranking.")] = 1.0,
    sparse: Annotated[float, typer.Option(help="Fusion weight of the BM25 ranking.")] = 1.0,
    per_document: Annotated[bool, typer.Option(help="Only each document's best chunk.")] = False,
    store: Annotated[str, typer.Option(help="The store to search (default: "
                                       "RAGSTREAM_STORE_SEARCH).")] = "",
    doc: Annotated[list[str], typer.Option(help="Only these documents (repeat it).")] = [],
    where: Annotated[list[str], typer.Option(help="Only chunks whose metadata has KEY=VALUE "
                                             "(VALUE read as JSON, else as text; repeat it).")]
    = [],
    rerank: Annotated[bool, typer.Option(help="Re-rank the fused candidates with the configured "
                                         "re-ranker (RAGSTREAM_SERVING_RERANKER).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")]
    = False,
) -> None:
    """Hybrid search of a live store: dense and keyword rankings fused with reciprocal rank
    fusion, then re-ranked where asked."""
    from ragstream.vectorstores.base import Filter
    from ragstream.vectorstores.search import FusionWeights, SearchRequest, shared_searcher

    cfg = settings()
    if store and store not in cfg.store.fresh_stores:
        raise typer.BadParameter(f"{store!r} is not kept fresh here; RAGSTREAM_STORE_FRESH "
                                 f"names {list(cfg.store.fresh_stores)}", param_hint="--store")
    if rerank and cfg.serving.reranker == "none":
        raise typer.BadParameter("no re-ranker is configured: set RAGSTREAM_SERVING_RERANKER and "
                                 "RAGSTREAM_SERVING_RERANKER_MODEL (docs/serving.md)",
                                 param_hint="--rerank")
    request = SearchRequest(query, k, FusionWeights(dense=dense, sparse=sparse), per_document,
                            Filter(frozenset(doc) if doc else None, _metadata_pairs(where)),
                            rerank)
    [result] = shared_searcher(cfg, store or None).search_many([request])
    if rerank and result.rerank != "reranked":
        print(f"re-ranking {result.rerank}: the fused order follows", file=sys.stderr)
    hits = result.hits
    if as_json:
        for hit in hits:
            print(json.dumps(hit.to_dict()), flush=True)
        return
    table = Table(title=f"{len(hits)} results for {query!r}")
    columns = ("#", "score", *(("rerank",) if rerank else ()), "doc", "chunk", "dense", "bm25",
               "text")
    for col in columns:
        table.add_column(col)
    for i, hit in enumerate(hits, start=1):
        reranked = () if not rerank else (
            "-" if hit.rerank_score is None else f"{hit.rerank_score:.4f}",)
        table.add_row(str(i), f"{hit.score:.4f}", *reranked, hit.doc_id, hit.chunk_id,
                      str(hit.dense_rank or "-"), str(hit.sparse_rank or "-"),
                      " ".join(hit.text.split())[:120])
    Console().print(table)


def _metadata_pairs(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--where")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@app.command()
def reindex(
    to: Annotated[str, typer.Option("--to", help="The store to fill.")],
    source: Annotated[str, typer.Option("--from", help="The store to copy (default: "
                                        "RAGSTREAM_STORE_SEARCH).")] = "",
    restart: Annotated[bool, typer.Option(help="Start over instead of resuming.")] = False,
) -> None:
    """Backfill a store from one that is current (a migration, or a new store kept fresh).
    Resumable: run it again after an interruption and it goes on from the last page."""
    from ragstream.vectorstores.backfill import backfill

    cfg = settings()

    def report(p) -> None:
        console.print(f"{p.copied}/{p.total} chunks copied ({p.changed} new or changed), "
                      f"up to {p.last!r}")

    done = backfill(cfg, source or cfg.store.search, to, restart=restart, progress=report)
    console.print(f"done: {done.copied} chunks copied to {to}, {done.changed} new or changed")


@app.command()
def reembed() -> None:
    """Re-embed every document: bump the embedding cache namespace and re-send the latest
    version of each live document from documents.v1."""
    from producers.reembed import reembed as run_reembed

    namespace, sent = asyncio.run(run_reembed(settings()))
    console.print(f"embedding cache namespace {namespace}; re-sent {sent} documents")


# scheduled jobs --------------------------------------------------------------------------------

refresh_app = typer.Typer(help="Run the scheduled refresh jobs by hand.", no_args_is_help=True)
app.add_typer(refresh_app, name="refresh")


@refresh_app.command("gcn")
def refresh_gcn(
    full: Annotated[bool, typer.Option("--full", help="The nightly job: retrain, re-embed all.")]
    = False,
    incremental: Annotated[bool, typer.Option("--incremental",
                                              help="Re-embed the dirty neighbourhoods.")] = False,
    frozen: Annotated[bool, typer.Option(help="With --full: re-embed all, keep the model.")]
    = False,
) -> None:
    """Refresh the GCN entity embeddings now (the same jobs the beat schedule runs)."""
    from ragstream.gcn.jobs import run_job

    if full == incremental:
        raise typer.BadParameter("pass exactly one of --full and --incremental")
    cfg = settings()
    logs.configure(cfg.log_level)
    mode = "incremental" if incremental else "full" if frozen else "retrain"
    report = asyncio.run(run_job(mode, cfg))
    print(json.dumps(report.summary()), flush=True)


@app.command()
def beat() -> None:
    """Run the Celery beat scheduler. Start several: only the lock holder fires."""
    from ragstream.celery_app import run_beat

    cfg = settings()
    logs.configure(cfg.log_level)
    run_beat(cfg)


@app.command("celery-worker")
def celery_worker(
    concurrency: Annotated[int, typer.Option(help="Task processes.")] = 1,
) -> None:
    """Run a Celery worker for the scheduled jobs (GCN refresh, compaction, gazetteer)."""
    cfg = settings()
    from ragstream.celery_app import app as celery, configure

    configure(cfg)
    celery.worker_main(["worker", f"--loglevel={cfg.log_level}", f"--concurrency={concurrency}"])


@app.command()
def gateway(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
) -> None:
    """Serve the HTTP gateway (/v1). SIGHUP re-reads the API keys."""
    import uvicorn

    from ragstream.gateway.app import create_app

    cfg = settings()
    logs.configure(cfg.log_level)
    uvicorn.run(create_app(cfg), host=host, port=port, log_config=None, access_log=False)


apikey_app = typer.Typer(help="Gateway API keys.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")


@apikey_app.command("new")
def apikey_new(
    key_id: Annotated[str, typer.Argument(metavar="ID")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: publish, search, infer, admin.")]
    = "publish,search",
    rate: Annotated[float, typer.Option(help="Tokens per second (a request, an event, a text "
                                        "or a KiB of document each cost one).")] = 100.0,
    burst: Annotated[int, typer.Option(help="Bucket size: the most one request may cost.")]
    = 1000,
) -> None:
    """Make a key: the key is printed once to stderr; add the JSON entry (stdout) to the keys file."""
    from ragstream.gateway.auth import new_key

    key, entry = new_key(key_id, [s.strip() for s in scopes.split(",") if s.strip()], rate, burst)
    console.print(f"API key for {key_id} (shown once): {key}")
    print(entry.model_dump_json())


# Triton ------------------------------------------------------------------------------------------

triton_app = typer.Typer(help="The local Triton Inference Server (PyTriton).", no_args_is_help=True)
app.add_typer(triton_app, name="triton")


@triton_app.command("serve")
def triton_serve(
    http_port: Annotated[int, typer.Option(help="HTTP port (loopback).")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port (loopback).")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port.")] = 8002,
    max_batch_size: Annotated[int, typer.Option(help="Each model's max batch size.")] = 64,
    max_queue_delay_us: Annotated[int, typer.Option(
        help="Dynamic batcher: the longest a request waits for batch-mates.")] = 2000,
    max_queue_size: Annotated[int, typer.Option(
        help="Requests queued per model before Triton rejects more (0: unbounded).")] = 1024,
    models: Annotated[str, typer.Option(help="Comma-separated.")] = "minilm,minilm_reranker",
) -> None:
    """Serve MiniLM (embedder) and the MiniLM reranker on a real Triton, with its dynamic batcher."""
    from ragstream.bringup import StopSignal
    from ragstream.triton.server import TritonServer

    server = TritonServer(_data_dir(), http_port=http_port, grpc_port=grpc_port,
                          metrics_port=metrics_port, max_batch_size=max_batch_size,
                          max_queue_delay_us=max_queue_delay_us, max_queue_size=max_queue_size,
                          models=models)
    stop = StopSignal()
    server.start()
    console.print(f"[bold]triton[/]: grpc {server.grpc_url}, http {server.http_url}, metrics "
                  f"127.0.0.1:{server.metrics_port}; models {models}; log {server.log_path}. "
                  "Ctrl-C stops.")
    try:
        while not stop.wait(1):
            if not server.alive():
                console.print(f"triton exited:\n{server.tail()}")
                raise typer.Exit(1)
    finally:
        server.stop()


def main() -> None:
    app()
