"""Synthetic card payloads (from shared/reference/card-payloads.md) and a builder for variants."""

from __future__ import annotations

BHYT15 = ("DN4790123456789|4e677579e1bb856e2056c4836e20416e|01/01/1990|1|"
          "53e1bb91203132204cc3aa204ce1bba3692c205068c6b0e1bb9d6e672042e1babf6e204e6768c3a92c20"
          "5175e1baad6e20312c205468c3a06e68207068e1bb912048e1bb93204368c3ad204d696e68|79 - 001|"
          "01/01/2024|-|01/01/2024|79000123456789|-|4|01/01/2029|0123456789abcdef-7102|$")
BHYT10 = ("7901234567|5472e1baa76e205468e1bb8b2042c3ad6368|15/03/1985|2|-|79 - 034|01/02/2025|-|"
          "20/02/2025|79020123456700|-|4|01/01/2020|15e89ac07ee8517f-7102|4|"
          "5175e1baad6e2031322c205468c3a06e68207068e1bb912048e1bb93204368c3ad204d696e68|$")
CCCD = "079090001234|025123456|Nguyễn Văn An|01011990|Nam|12 Lê Lợi, Bến Nghé, Quận 1, TP Hồ Chí Minh|15062021"
VIETQR = "00020101021238540010A00000072701240006970436011012345678900208QRIBFTTA53037045802VN6304ABCD"


def hexs(text: str) -> str:
    return text.encode("utf-8").hex()


def with_field(payload: str, index: int, value: str) -> str:
    """The payload with field `index` replaced (empty tokens kept, as the reader must)."""
    tokens = payload.split("|")
    tokens[index] = value
    return "|".join(tokens)
