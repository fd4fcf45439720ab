"""JSON Schemas of every MQTT payload (agent/schemas/*.json), loaded once."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import jsonschema

NAMES = ("checkin", "status", "health", "verdict", "receipt", "ignored")


@lru_cache(maxsize=None)
def validator(name: str) -> jsonschema.Draft202012Validator:
    text = resources.files("agent").joinpath("schemas", f"{name}.json").read_text("utf-8")
    schema = json.loads(text)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def errors(name: str, payload: object) -> list[str]:
    """Human-readable schema violations; empty when the payload is valid."""
    return [f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message[:200]}"
            for e in validator(name).iter_errors(payload)]
