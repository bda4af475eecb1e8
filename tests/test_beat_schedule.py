"""Celery beat with RedBeat on a real FalkorDB (Redis) broker: the schedule comes from config,
every scheduled task exists, and two beat processes fire each task exactly once per period."""

from __future__ import annotations

import importlib
import json
import signal
import sys
import time
from collections import defaultdict

from ragstream.celery_app import TASK_MODULES, app
from ragstream.config import Settings
from ragstream.schedule import ENTRIES, beat_schedule
from ragstream.stack import ManagedProcess

PERIOD_S = 3.0
LOCK_TIMEOUT_S = 4.0


def test_every_scheduled_task_is_registered_and_periods_come_from_config(monkeypatch):
    for module in TASK_MODULES:
        importlib.import_module(module)
    assert {task for task, _ in ENTRIES.values()} <= set(app.tasks)
    monkeypatch.setenv("RAGSTREAM_SCHEDULE_GCN_RETRAIN", "30 4 * * *")
    monkeypatch.setenv("RAGSTREAM_SCHEDULE_GCN_INCREMENTAL", "120")
    schedule = beat_schedule(Settings().schedule)
    assert schedule["gcn-incremental-refresh"]["schedule"] == 120.0
    assert str(schedule["gcn-full-retrain"]["schedule"]).startswith("<crontab: 30 4 * * *")


def test_two_beats_fire_each_task_once_per_period(env, falkordb, redis_client, tmp_path):
    env = {**env, "RAGSTREAM_SCHEDULE_MAX_LOOP_INTERVAL_S": "0.5",
           "RAGSTREAM_SCHEDULE_LOCK_TIMEOUT_S": str(LOCK_TIMEOUT_S),
           **{f"RAGSTREAM_SCHEDULE_{field.upper()}": str(PERIOD_S)
              for _, field in ENTRIES.values()}}
    queue = f"{env['RAGSTREAM_GROUP_PREFIX']}.celery"  # no worker consumes it: fires pile up
    beats = [ManagedProcess(f"beat{i}", [sys.executable, "-m", "ragstream", "beat"],
                            tmp_path / f"beat{i}.log", env=env) for i in range(2)]
    for beat in beats:
        beat.start()
    fires: dict[str, list[tuple[float, str]]] = defaultdict(list)
    try:
        _watch(redis_client, queue, fires, beats, until=lambda: _rounds(fires) >= 4)
        leaders = {origin for times in fires.values() for _, origin in times}
        assert len(leaders) == 1, f"more than one beat fired: {leaders}"
        # the leader dies: the other beat takes over once its lock expires, without a burst
        leader = next(b for b in beats if f"gen{b.pid}@" in next(iter(leaders)))
        leader.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        beats.remove(leader)
        _watch(redis_client, queue, fires, beats,
               until=lambda: all(t > killed_at + LOCK_TIMEOUT_S for t in _lasts(fires)))
    finally:
        for beat in beats:
            beat.stop()

    assert set(fires) == {task for task, _ in ENTRIES.values()}
    for task, times in fires.items():
        gaps = [b - a for (a, _), (b, _) in zip(times, times[1:])]
        assert len(times) >= 5, (task, times)
        # once per period: never two fires within a period, none skipped while a leader lived
        assert all(gap >= 0.75 * PERIOD_S for gap in gaps), (task, gaps)
        assert max(gaps) <= PERIOD_S + LOCK_TIMEOUT_S + 2 * PERIOD_S, (task, gaps)
        before = [gap for (a, _), gap in zip(times, gaps) if a + gap < killed_at]
        assert before and all(gap <= 1.5 * PERIOD_S for gap in before), (task, before)
        assert len({origin for _, origin in times}) == 2  # the successor carried on


def _watch(client, queue, fires, beats, until, timeout: float = 90.0) -> None:
    """Record every message the beats put on the queue, with when it appeared and who sent it."""
    deadline = time.monotonic() + timeout
    seen = sum(len(v) for v in fires.values())
    while not until():
        assert time.monotonic() < deadline, f"fires so far: {dict(fires)}"
        for beat in beats:
            assert beat.alive(), beat.tail()
        total = client.llen(queue)
        if total > seen:
            now = time.monotonic()
            for raw in reversed(client.lrange(queue, 0, total - seen - 1)):  # LPUSH: newest first
                headers = json.loads(raw)["headers"]
                fires[headers["task"]].append((now, headers["origin"]))
            seen = total
        time.sleep(0.1)


def _rounds(fires) -> int:
    return min((len(v) for v in fires.values()), default=0) if len(fires) == len(ENTRIES) else 0


def _lasts(fires) -> list[float]:
    return [times[-1][0] for times in fires.values()]
