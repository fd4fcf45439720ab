"""Synthetic card payloads (from shared/reference/card-payloads.md) and a builder for variants."""

from __future__ import annotations

# the reference's synthetic samples, shared with the bundled demo
from agent.sim.demo import BHYT10, BHYT15, CCCD, VIETQR  # noqa: E402,F401
from agent.cards.sanitize import MAX_PAYLOAD_CHARS


def hexs(text: str) -> str:
    return text.encode("utf-8").hex()


def with_field(payload: str, index: int, value: str) -> str:
    """The payload with field `index` replaced (empty tokens kept, as the reader must)."""
    tokens = payload.split("|")
    tokens[index] = value
    return "|".join(tokens)


#: The largest check-ins the card reader can give (issue 32: what the station stores must fit what it
#: publishes): every text field at its cap (256 characters) in 4-byte characters, which JSON keeps
#: as 4 bytes each (a quote or backslash takes 2). A CCCD code has 11 such fields (name, address,
#: 9 extra), and its old-ID field takes the rest of the 8 192 characters the reader reads (digits:
#: the code is read, the field left out beyond 12 of them). A BHYT code has 4 (name, address, guardian, issuing office) and a
#: 64-character check string.
WIDE = "\U00020000" * 256
_CCCD = ["079090001234", "{old}", WIDE, "15031990", "Nam", WIDE, "01012021"] + [WIDE] * 9
LARGEST_CCCD = "|".join(_CCCD).replace("{old}", "1" * (MAX_PAYLOAD_CHARS - len("|".join(_CCCD)) + len("{old}")))
LARGEST_BHYT = "|".join(["0123456789", hexs(WIDE), "01/01/1990", "1", hexs(WIDE), "79 - 001", "01/01/2024", "-",
                         "01/01/2024", "79000123456789", WIDE, "4", "01/01/2029", WIDE[:64], "4", hexs(WIDE), "$"])
