"""The whole pipeline under chaos and hostile input converges to a clean run's end state.

One seeded Reuters history (with updates and deletes) goes through the real pipeline three times,
each on its own Tansu broker and FalkorDB server, with the workers as real subprocesses:

- clean: nothing fails; its end state is the reference;
- chaos: >= 10 SIGKILLs of random workers at seeded points of progress, the graph store (the
  FalkorDB server, also the index's Redis) stopped for 20 s, the embedding cache flushed, one
  worker SIGSTOPped past its session timeout and SIGCONTed;
- hostile: 1,000 invalid events (a fixed corpus of nasties, the rest drawn by hypothesis), every
  valid event published twice, older versions re-sent after newer ones;
- adversarial: valid but hostile events of every class of issue 15 through the gateway and
  straight to the topics, search queries throughout, and crashes at each step of batches that
  hold several versions of one document (testing/adversarial.py).

The suite runs a 60-document history to stay inside the CI budget; ``bench/chaos_report.py``
runs the same code on 2,000 documents (docs/reliability.md).
"""

from __future__ import annotations

import pytest

from testing import adversarial, chaos

# four runs (the first test's fixture) take about 6 minutes here, more on a loaded machine
pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(1800)]

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
    # the contract's edges went through: the longest document id and the highest version
    assert {chaos.LONGEST_DOC_ID, chaos.HIGHEST_VERSION_DOC_ID} <= set(graph_docs)
    live = {d: v for d, (v, deleted) in h.final.items() if not deleted}
    assert clean.state["index"]["doc_versions"] == live
    assert clean.state["graph"]["mentions"] and clean.state["graph"]["cooccurs"]
    chunks = len(clean.state["index"]["chunks"])
    assert clean.state["search"]["counts"] == [len(live), chunks] and chunks > len(live)
    assert clean.state["search"]["duplicates"] == 0
    assert clean.converged and clean.stalled_partitions == []
    assert clean.unexpected_restarts == 0


def test_chaos_run_equals_the_clean_run_store_by_store(report):
    run, c = _run(report, "chaos"), report.comparisons["chaos"]
    # only kills of a live worker whose group had input left count (issue 18)
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


def test_adversarial_input_is_refused_or_dead_lettered_and_changes_nothing(report):
    run, c, verdict = _run(report, "adversarial"), report.comparisons["adversarial"], \
        report.adversarial
    assert verdict.problems() == []
    summary = verdict.summary()
    assert summary["hostile_accepted_wrongly"] == summary["hostile_mishandled"] == 0
    assert summary["hostile_refused"] and summary["hostile_dead_lettered"]
    assert summary["edges_accepted"] == summary["edges"] == 2
    assert summary["dead_letters_unexplained"] == 0
    assert run.dlq_actual == run.dlq_expected
    # search answered throughout, and never with a hostile document
    assert verdict.queries >= 20 and verdict.search_availability == 1.0
    assert verdict.hostile_hits == 0
    # every failpoint fired: each step of a multi-version batch, in each crashed worker
    assert run.crashes_injected == run.failpoints_armed == 12, run.crash_log
    assert run.converged and run.stalled_partitions == []
    assert run.oom_killed == run.evicted == run.unexpected_restarts == 0
    assert c.equal == {s: True for s in chaos.STORES}, c.details
    assert (c.lost, c.duplicated, c.wrong_version) == (0, 0, 0), c.details


def test_each_hostile_event_straight_to_a_topic_fails_where_it_should():
    """Those with a decode-stage reason fail the contract with exactly it; the rest pass it and
    are left to a worker's own check (wrong_embedding, no_vector, version_reused,
    too_many_chunks) or to the version order (ignored)."""
    from schemas.catalogue import DecodeError, decode, topic

    h = chaos.history(DOCS, SEED)
    phase = adversarial.AdversarialPhase(h.events, h.final, chaos.EDGE_DOCS, SEED)
    decode_reasons = {"unknown_type", "invalid_payload", "subject_mismatch"}
    straight = [x for x in phase.hostile if x.message is not None]
    assert {x.kind for x in phase.hostile} == {"resource", "cross_scope", "cross_topic",
                                               "version", "id_length", "subject", "reused"}
    for x in straight:
        name, _, value = x.message
        try:
            decode(topic(name), value, 1 << 20)
            got = None
        except DecodeError as exc:
            got = exc.reason
        wanted = set(x.reasons.values()) & decode_reasons
        assert {got} - {None} == wanted, (x.name, got, x.reasons)


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
