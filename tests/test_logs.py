"""A secret never reaches a log line, whatever characters it holds and however it is quoted."""

from __future__ import annotations

import json
import logging

import pytest

from ragstream import logs
from ragstream.config import Settings
from tests.helpers import json_logs


@pytest.mark.parametrize("password", ['pa"ss', "back\\slash", "pässwörd-ü", "tab\there",
                                      "it's"])
def test_a_secret_with_escaped_characters_is_redacted(password, monkeypatch):
    monkeypatch.setenv("RAGSTREAM_NEO4J_PASSWORD", password)
    Settings()
    logger = logging.getLogger("test.redaction.escaped")
    with json_logs(logger.name) as stream:
        logger.warning("login with %s failed", password,
                       extra={"error": repr(ConnectionError(f"auth {password!r} refused")),
                              "nested": {"args": [password]}, "obj": ValueError(password)})
        try:
            raise RuntimeError(f"driver said: {password!r}")
        except RuntimeError:
            logger.exception("and again")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    for line in lines:
        doc = json.loads(line)  # still one valid JSON object per line
        text = json.dumps(doc, ensure_ascii=False)
        for form in (password, repr(password)[1:-1], json.dumps(password)[1:-1]):
            assert form not in line and form not in text, (form, line)
        assert logs.REDACTED in line
