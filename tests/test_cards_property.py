"""Property: whatever bytes or text reach the reader, it returns a verdict and never raises."""

import json
from datetime import date

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.cards import KINDS, VERDICTS, read_card
from support.payloads import BHYT10, BHYT15, CCCD, VIETQR

SAMPLES = [BHYT15, BHYT10, CCCD, VIETQR]
settings.register_profile("ci", max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")

# Pieces that provoke each code path: separators, terminators, dates, hex, escapes, bidi.
NASTY = ["|", "$", "#", "-", " ", "\u200e", "\ufeff", "\u202e", "\x1b[31m", "\x00", "/", "01/01/1990",
         "79 - 001", "ff", "c3", "\ud800", "Nữ", "0" * 12, "\U0001f600", "\r\n"]


def check(read):
    assert read.kind in KINDS
    assert read.verdict in VERDICTS
    if read.verdict == "invalid":
        assert any(p.fatal for p in read.problems)
    json.dumps(read.to_dict())  # always serialisable (no bytes, no dates)
    for p in read.problems:
        assert p.code and p.message
    return read


@given(st.text(max_size=600))
def test_arbitrary_text(text):
    check(read_card(text, date(2026, 1, 1)))


@given(st.binary(max_size=600))
def test_arbitrary_bytes(data):
    check(read_card(data))


@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_real_payloads(sample, data):
    tokens = sample.split("|")
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["replace", "insert", "delete", "splice", "truncate"]))
        i = data.draw(st.integers(0, len(tokens) - 1))
        if action == "replace":
            tokens[i] = data.draw(st.one_of(st.sampled_from(NASTY), st.text(max_size=30)))
        elif action == "insert":
            tokens.insert(i, data.draw(st.sampled_from(NASTY)))
        elif action == "delete" and len(tokens) > 1:
            del tokens[i]
        elif action == "splice":
            t = tokens[i]
            j = data.draw(st.integers(0, len(t)))
            tokens[i] = t[:j] + data.draw(st.sampled_from(NASTY)) + t[j:]
        elif action == "truncate":
            tokens = tokens[: i + 1]
    text = "|".join(tokens)
    read = check(read_card(text, data.draw(st.dates())))
    check(read_card(text.encode("utf-8", "surrogatepass")))
    # no control character, escape or bidi override survives into any field
    for value in read.card.values():
        for ch in json.dumps(value, ensure_ascii=False):
            assert ch not in "\x1b\x00\u202e\u200e\ufeff\x9b"


@given(st.sampled_from([BHYT15, BHYT10]), st.data())
def test_hex_case_never_changes_the_read(sample, data):
    tokens = sample.split("|")
    flipped = [t.upper() if i in (1, 4, 15) else t for i, t in enumerate(tokens)]
    today = data.draw(st.dates(min_value=date(2000, 1, 1)))
    assert read_card("|".join(flipped), today).to_dict() == read_card(sample, today).to_dict()
