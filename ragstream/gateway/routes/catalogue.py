"""``GET /v1/topics``: the topic catalogue."""

from __future__ import annotations

from fastapi import APIRouter

from ragstream.gateway.dependencies import require
from ragstream.gateway.models import TopicOut
from schemas.catalogue import TOPICS

router = APIRouter(tags=["catalogue"], dependencies=[require("search")])


@router.get("/v1/topics", response_model=list[TopicOut])
async def topics() -> list[TopicOut]:
    return [TopicOut(name=s.name, version=s.version, events=list(s.events),
                     dead_letter_topic=s.dlq, description=s.description)
            for s in TOPICS.values()]
