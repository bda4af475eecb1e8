"""Generate the committed contract files from the models: JSON Schema per event, one AsyncAPI 3.0.

``python -m schemas.generate`` rewrites them; ``python -m schemas.generate --check`` fails when the
committed files differ from what the code generates (CI runs it through the test suite).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from schemas.catalogue import TOPICS
from schemas.envelope import Envelope

OUT = Path(__file__).parent
ASYNCAPI = OUT / "asyncapi.json"
JSONSCHEMA_DIR = OUT / "jsonschema"


def dump_json(obj: dict) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def json_schemas() -> dict[Path, str]:
    files = {JSONSCHEMA_DIR / "envelope.json": dump_json(Envelope.model_json_schema())}
    for spec in TOPICS.values():
        for event_type, model in spec.events.items():
            schema = model.model_json_schema()
            schema["$id"] = f"ragstream:{spec.name}:{event_type}"
            files[JSONSCHEMA_DIR / spec.name / f"{event_type}.json"] = dump_json(schema)
    return files


def asyncapi() -> dict:
    channels, operations, messages = {}, {}, {}
    for spec in TOPICS.values():
        refs = {}
        for event_type, model in spec.events.items():
            msg_name = event_type.replace(".", "_")
            messages[msg_name] = {
                "name": event_type,
                "title": model.__name__,
                "summary": (model.__doc__ or model.__name__).strip().splitlines()[0],
                "contentType": "application/json",
                "headers": {"$ref": "#/components/schemas/Envelope"},
                "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
                "correlationId": {"location": "$message.header#/id"},
            }
            refs[msg_name] = {"$ref": f"#/components/messages/{msg_name}"}
        channel = spec.name.replace(".", "_")
        channels[channel] = {
            "address": spec.name,
            "description": spec.description,
            "messages": refs,
            "bindings": {"kafka": {"topic": spec.name, "bindingVersion": "0.5.0"}},
        }
        operations[f"publish_{channel}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{m}"} for m in refs],
        }
        if spec.dead_letter:
            channels[channel + "_dlq"] = {
                "address": spec.dlq,
                "description": f"Dead letters of {spec.name}: the original bytes, unchanged, "
                "with headers x-error-class, x-error-reason, x-error-message, x-stage, "
                "x-attempts, x-original-topic, x-original-partition, x-original-offset.",
            }
    schemas = {"Envelope": Envelope.model_json_schema(ref_template="#/components/schemas/{model}")}
    for spec in TOPICS.values():
        for model in spec.events.values():
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in schema.pop("$defs", {}).items():
                schemas[name] = sub
            schemas[model.__name__] = schema
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "ragstream",
            "version": "1.0.0",
            "description": "Events that keep RAG and knowledge-graph stores fresh. "
            "Every message is a CloudEvents-shaped envelope keyed by its subject.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def expected_files() -> dict[Path, str]:
    files = json_schemas()
    files[ASYNCAPI] = dump_json(asyncapi())
    return files


def stale_files() -> list[str]:
    """Committed files that differ from the generated ones, plus generated files nobody asked for."""
    expected = expected_files()
    stale = [str(p.relative_to(OUT)) for p, text in expected.items()
             if not p.exists() or p.read_text() != text]
    stale += [str(p.relative_to(OUT)) for p in JSONSCHEMA_DIR.rglob("*.json") if p not in expected]
    return sorted(stale)


def write() -> None:
    expected = expected_files()
    for path in JSONSCHEMA_DIR.rglob("*.json"):
        if path not in expected:
            path.unlink()
    for path, text in expected.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed files are stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print("stale schema files (run `python -m schemas.generate`):", *stale, sep="\n  ")
            return 1
        return 0
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
