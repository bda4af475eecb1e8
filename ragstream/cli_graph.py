"""``ragstream graph``: look into the knowledge graph, audit entity merges, and undo one.

The CLI hands these commands its settings loader in ``ctx.obj`` (see ``ragstream.cli``), so this
module does not import the CLI back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ragstream.config import Settings

graph_app = typer.Typer(help="The knowledge graph: counts, merge audit, unmerge.",
                        no_args_is_help=True)
console = Console()


def _settings(ctx: typer.Context) -> Settings:
    load: Callable[[], Settings] = ctx.obj
    return load()


def _run(cfg: Settings, work):
    from ragstream.graph import open_graph_store

    async def main():
        store = await open_graph_store(cfg)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(main())


@graph_app.command("stats")
def stats(ctx: typer.Context) -> None:
    """Node and edge counts, and the total weight of each edge type."""
    counts = _run(_settings(ctx), lambda store: store.counts())
    print(json.dumps({"nodes": counts.nodes, "edges": counts.edges,
                      "edge_weights": counts.edge_weights}))


@graph_app.command("links")
def links(ctx: typer.Context, entity_id: str) -> None:
    """How each document's mentions were linked to an entity (method, score, surfaces)."""
    rows = _run(_settings(ctx), lambda store: store.links(entity_id))
    table = Table("document", "method", "score", "surfaces", "spans")
    for r in rows:
        table.add_row(r["doc"], r["method"], "" if r["score"] is None else f"{r['score']:.3f}",
                      ", ".join(r["surfaces"]), " ".join(r["spans"]))
    console.print(table)


@graph_app.command("merges")
def merges(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="At most this many mention edges.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
) -> None:
    """Mentions linked to an entity from another name: the merges that ``unmerge`` can undo."""
    rows = _run(_settings(ctx), lambda store: store.merges(limit))
    if as_json:
        for r in rows:
            print(json.dumps(r))
        return
    table = Table("document", "entity", "name", "method", "score", "merged mentions")
    for r in rows:
        table.add_row(r["doc"], r["entity"], r["name"], r["method"],
                      "" if r["score"] is None else f"{r['score']:.3f}",
                      ", ".join(f"{m['surface']} ({m['cls']} {m['start']}:{m['end']})"
                                for m in r["merged"]))
    console.print(table)


@graph_app.command("unmerge")
def unmerge(
    ctx: typer.Context,
    doc_id: str,
    entity_id: str,
    surface: Annotated[str | None, typer.Option(help="Only the mentions written so.")] = None,
) -> None:
    """Undo a merge in one document: the mentions of ENTITY_ID that came from another name go
    to the entity they would have been on their own; later resolutions never merge them again.
    The entities and edges it touched go out on kg.changes.v1, so the GCN refreshes them."""
    cfg = _settings(ctx)
    try:
        result = _run(cfg, lambda store: store.unmerge(doc_id, entity_id, surface))
    except LookupError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    print(json.dumps(result))
    try:
        asyncio.run(_publish_change(cfg, result))
    except Exception as exc:  # the graph is changed already: say what is missing
        console.print(f"[red]the merge is undone, but kg.changes.v1 was not published "
                      f"({exc!r}); the GCN sees it at its next full retrain[/red]")
        raise typer.Exit(1) from exc


async def _publish_change(cfg: Settings, result: dict) -> None:
    from ragstream.publisher import Publisher
    from schemas.catalogue import KG_CHANGED
    from schemas.envelope import Envelope, derived_event_id
    from schemas.payloads import KgChanged

    change = KgChanged(doc_id=result["doc"], doc_version=result["version"],
                       entities=result["entities"], edges=result["edges"])
    envelope = Envelope(
        id=derived_event_id(KG_CHANGED, "unmerge", result["doc"], result["from"], *result["to"]),
        type=KG_CHANGED, source="ragstream/cli", subject=result["doc"],
        data=change.model_dump(mode="json"))
    async with Publisher(cfg) as pub:
        await pub.publish([envelope])


@graph_app.command("unmerges")
def unmerges(ctx: typer.Context) -> None:
    """The merges undone so far (the block list every resolution respects)."""
    for u in _run(_settings(ctx), lambda store: store.unmerges()):
        print(json.dumps(u))
