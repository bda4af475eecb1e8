"""The beat schedule, from config (``RAGSTREAM_SCHEDULE_*``); ``celery_app.run_beat`` runs it.

Each job's period is a number of seconds ("300") or a five-field crontab ("0 3 * * *").
Tasks are named, not imported: the beat process needs no model code. ``test_beat_schedule``
checks that every name here is a task some module of ``TASK_MODULES`` registers.

One beat fires: beat uses RedBeat, whose scheduler takes a Redis lock with a TTL before it
ticks and renews it on every tick. A second beat process blocks on the lock and takes over only
after the leader stops renewing (it died), within ``lock_timeout_s``. Due times live in Redis
too, so the successor continues the schedule instead of firing everything again.
"""

from __future__ import annotations

from celery.schedules import crontab

from ragstream.config import ScheduleSettings

# beat entry -> (task name, the ScheduleSettings field holding its period)
ENTRIES: dict[str, tuple[str, str]] = {
    "gcn-incremental-refresh": ("ragstream.gcn.refresh_incremental", "gcn_incremental"),
    "gcn-full-retrain": ("ragstream.gcn.retrain", "gcn_retrain"),
    "index-compaction": ("ragstream.index.compact", "index_compaction"),
    "kg-gazetteer-refresh": ("ragstream.kg.refresh_gazetteer", "gazetteer_refresh"),
}


def period(spec: str) -> float | crontab:
    """Seconds ("300", "2.5") or a crontab ("minute hour day-of-month month day-of-week")."""
    fields = spec.split()
    if len(fields) == 1:
        seconds = float(fields[0])
        if seconds <= 0:
            raise ValueError(f"a period must be positive: {spec!r}")
        return seconds
    if len(fields) != 5:
        raise ValueError(f"expected seconds or a 5-field crontab: {spec!r}")
    minute, hour, day_of_month, month, day_of_week = fields
    return crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month,
                   day_of_week=day_of_week)


def beat_schedule(cfg: ScheduleSettings) -> dict[str, dict]:
    return {entry: {"task": task, "schedule": period(getattr(cfg, field))}
            for entry, (task, field) in ENTRIES.items()}

