"""The whole pipeline under chaos and hostile input converges to a clean run's end state.

One seeded Reuters history (with updates and deletes) goes through the real pipeline three times,
each on its own Tansu broker and FalkorDB server, with the workers as real subprocesses:

- clean: nothing fails; its end state is the reference;
- chaos: >= 10 SIGKILLs of random workers at seeded points of progress, the graph store (the
  FalkorDB server, also the index's Redis) stopped for 20 s, the embedding cache flushed, one
  worker SIGSTOPped past its session timeout and SIGCONTed;
- hostile: 1,000 invalid events (a fixed corpus of nasties, the rest drawn by hypothesis), every
  valid event published twice, older versions re-sent after newer ones.

The suite runs a 60-document history to stay inside the CI budget; ``bench/chaos_report.py``
runs the same code on 2,000 documents (docs/reliability.md).
"""

from __future__ import annotations

import pytest

from testing import chaos

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

DOCS = 60  # the CLI and the bench default to 2,000: same code path, smaller history for CI
SEED = 20261125
INVALID = 1000


@pytest.fixture(scope="module")
async def report(tmp_path_factory) -> chaos.Report:
    return await chaos.run_all(DOCS, SEED, tmp_path_factory.mktemp("chaos"), invalid=INVALID,
                               plan=chaos.ChaosPlan(kills=10, outage_s=20.0), timeout_s=900)


def _run(report: chaos.Report, name: str) -> chaos.RunResult:
    return next(r for r in report.runs if r.name == name)


def test_clean_run_reaches_every_final_version(report):
    h = chaos.history(DOCS, SEED)
    clean = _run(report, "clean")
    graph_docs = {d: (v, deleted) for d, v, deleted, *_ in clean.state["graph"]["documents"]}
    assert graph_docs == h.final
    assert {d: v for d, (v, _) in h.final.items()} == clean.state["index"]["doc_versions"]
    live = {d for d, (_, deleted) in h.final.items() if not deleted}
    assert {c[0] for c in clean.state["index"]["chunks"].values()} == live
    assert clean.state["graph"]["mentions"] and clean.state["graph"]["cooccurs"]
    assert clean.state["replica"]["chunk_ids"] == sorted(clean.state["index"]["chunks"])
    assert clean.unexpected_restarts == 0


def test_chaos_run_equals_the_clean_run_store_by_store(report):
    run, c = _run(report, "chaos"), report.comparisons["chaos"]
    assert run.kills >= 10, run.kill_log
    assert (run.outages, run.cache_flushes, run.stops) == (1, 1, 1)
    assert run.flushed_vectors > 0, "the cache flush must find vectors to drop"
    assert c.equal == {s: True for s in chaos.STORES}, c.details
    assert (c.lost, c.duplicated, c.wrong_version) == (0, 0, 0), c.details
    assert run.unexpected_restarts == 0


def test_hostile_input_is_dead_lettered_and_changes_nothing(report):
    run, c = _run(report, "hostile"), report.comparisons["hostile"]
    assert run.invalid == INVALID and run.duplicates > 0 and run.reordered > 0
    assert c.equal == {s: True for s in chaos.STORES}, c.details
    assert (c.lost, c.duplicated, c.wrong_version) == (0, 0, 0), c.details
    # each invalid event dead-lettered once by each group that reads documents.v1, with a reason
    assert run.dlq_actual == run.dlq_expected == INVALID * len(chaos.DOCUMENT_GROUPS)
    assert run.dlq_without_reason == 0
    assert run.unexpected_restarts == 0, "input must never crash a worker"


def test_the_fixed_corpus_covers_every_kind_of_nasty():
    kinds = {k for k, _ in chaos.nasties()}
    assert {"truncated", "deep_nesting", "oversized_10mb", "invalid_utf8", "nul", "injection",
            "wrong_version"} <= kinds
    assert max(len(raw) for _, raw in chaos.nasties()) >= 10_000_000
    drawn = chaos.generated(50, SEED)
    assert drawn == chaos.generated(50, SEED), "hypothesis draws are reproducible from the seed"


def test_every_invalid_event_is_invalid():
    bad = [raw for _, raw in chaos.invalid_events(INVALID, SEED)]
    assert len(bad) == INVALID
    assert not [raw[:80] for raw in bad if chaos.is_valid(raw)]
