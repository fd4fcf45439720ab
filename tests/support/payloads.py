"""Synthetic card payloads (from shared/reference/card-payloads.md) and a builder for variants."""

from __future__ import annotations

# the reference's synthetic samples, shared with the bundled demo
from agent.sim.demo import BHYT10, BHYT15, CCCD, VIETQR  # noqa: E402,F401


def hexs(text: str) -> str:
    return text.encode("utf-8").hex()


def with_field(payload: str, index: int, value: str) -> str:
    """The payload with field `index` replaced (empty tokens kept, as the reader must)."""
    tokens = payload.split("|")
    tokens[index] = value
    return "|".join(tokens)
