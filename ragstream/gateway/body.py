"""Request bodies are strict JSON: text that can be encoded, numbers that are finite.

Python's JSON parser accepts what JSON cannot carry: ``NaN``, ``Infinity``, ``1e400`` (which
becomes ``inf``) and escaped lone surrogates such as ``"\\ud800"`` (which no UTF-8 encoder
takes). Each passed validation and then failed where the gateway encoded its answer or its
event: a 500 or a reset connection, even for a 422 that echoed the input. The routes with a body
use ``StrictJSONRoute``, so such a body is a 422 that says what is wrong, before any route runs.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute

# a \uD800-\uDFFF escape; only a body with one can hold a lone surrogate
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _not_json(message: str, loc: tuple = ()) -> HTTPException:
    # an HTTPException: FastAPI turns any other exception from the parser into a bare 400
    return HTTPException(422, [{"loc": ["body", *loc], "msg": message, "type": "json_invalid"}])


def _refuse_constant(name: str) -> Any:
    raise _not_json(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _not_json(f"the number {text[:40]} is out of range")
    return value


def _lone_surrogate(document: Any) -> tuple[tuple, str] | None:
    """Where the first lone surrogate is (the value's location, and whether a key or the value
    holds it), or None. Iterative: a body can be nested as deep as the parser allows."""
    stack: list[tuple[Any, tuple]] = [(document, ())]
    while stack:
        value, loc = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return loc, "the value"
        elif isinstance(value, dict):
            for key, item in value.items():
                if _SURROGATE.search(key):
                    return loc, "a key"
                stack.append((item, loc + (key,)))
        elif isinstance(value, list):
            stack.extend((item, loc + (i,)) for i, item in enumerate(value))
    return None


def strict_json(body: bytes) -> Any:
    text = body.decode(json.detect_encoding(body))
    document = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    if _SURROGATE_ESCAPE.search(text) and (found := _lone_surrogate(document)) is not None:
        loc, holder = found
        raise _not_json(f"{holder} holds a lone UTF-16 surrogate (such as \\ud800), which is "
                        "not text", loc)
    return document


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """A route whose JSON body is parsed by ``strict_json``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict
