"""Hostile chips: seeded random damage to the TLV files and to the chip's answers. The parsers
may only raise ChipError (TlvError); read_chip may only return a ChipResult, quickly."""

from __future__ import annotations

import random
import time

import pytest

from agent.chip import lds, passive, tlv
from agent.chip.terminal import ChipResult, read_chip
from agent.chip.transport import ChipError
from agent.sim.chip import SimCard, SimChip, damage, make_pki
from test_chip import access_for

CARD = SimCard(spouse="Lê Thị Dung")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def chip(pki):
    return SimChip(CARD, pki, aa="ec")


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """Random damage; half the time inside the outer TLV, whose length is then made right again
    (so the damage reaches the nested structure rather than the first length check)."""
    try:
        outer = tlv.parse(data)
    except tlv.TlvError:
        outer = None
    pick = rng.random()
    if outer is not None and pick < 0.4:
        return _restructure(rng, outer)
    if outer is not None and pick < 0.7:
        return tlv.encode(outer.tag, damage(rng, outer.value, 4))
    return damage(rng, data, 4)


def _restructure(rng: random.Random, root: tlv.Node) -> bytes:
    """Well-formed TLV with one node changed: dropped, doubled, emptied, retagged, its value
    replaced, or its children's order reversed; every length made right again."""
    nodes, stack = [], [root]
    while stack:
        n = stack.pop()
        nodes.append(n)
        stack.extend(n.children)
    victim = rng.choice(nodes)
    op = rng.randrange(6)

    def build(n: tlv.Node) -> bytes:
        kids = n.children
        if n is victim:
            if op == 0 and n is not root:
                return b""
            if op == 1 and n is not root:
                return build_plain(n) * 2
            if op == 2:
                return tlv.encode(n.tag, b"")
            if op == 3:
                return tlv.encode(rng.choice([0x02, 0x04, 0x06, 0x0C, 0x30, 0x31, 0xA0, 0x5F1F]),
                                  n.value)
            if op == 4:
                return tlv.encode(n.tag, rng.randbytes(rng.randint(0, 40)))
            kids = list(reversed(kids))
        if not n.constructed:
            return n.raw
        return tlv.encode(n.tag, b"".join(build(c) for c in kids))

    def build_plain(n: tlv.Node) -> bytes:
        return n.raw

    return build(root)


PARSERS = {0x0101: lds.parse_dg1, 0x010D: lds.parse_dg13, 0x0102: lds.dg2_image,
           0x011E: lds.parse_com, 0x011D: lds.parse_sod, 0x010F: lds.dg15_key,
           0x010E: lds.dg14_aa_hash}


def test_tlv_parsers_on_damaged_files(chip):
    rng = random.Random(33)
    counts = {"ok": 0, "refused": 0}
    for case in range(3000):
        fid = rng.choice(sorted(PARSERS))
        data = _mutate(rng, chip.files[fid]) if case % 10 else rng.randbytes(rng.randint(0, 64))
        try:
            PARSERS[fid](data)
            counts["ok"] += 1
        except ChipError:
            counts["refused"] += 1
    assert counts["refused"] > 1000 and counts["ok"] > 50, counts


def test_passive_never_raises_on_a_damaged_sod(chip):
    rng = random.Random(34)
    groups = {n: chip.files[0x0100 + n] for n in (1, 13)}
    for _ in range(800):
        r = passive.verify(_mutate(rng, chip.files[0x011D]), groups)
        assert r.level in ("failed", "signature") and (r.level == "signature" or r.reason)


def test_deep_and_wide_tlv_are_bounded():
    deep = b""
    for _ in range(2000):
        deep = tlv.encode(0x30, deep)
    t = time.monotonic()
    with pytest.raises(tlv.TlvError, match="deeper"):
        tlv.parse(deep)
    with pytest.raises(tlv.TlvError, match="too many"):
        tlv.parse(tlv.encode(0x30, b"\x05\x00" * 20000))
    with pytest.raises(tlv.TlvError, match="claims"):
        tlv.parse(b"\x30\x84\x7f\xff\xff\xff\x00")
    with pytest.raises(tlv.TlvError, match="length of"):
        tlv.parse(b"\x30\x88" + b"\xff" * 8)
    with pytest.raises(tlv.TlvError, match="indefinite"):
        tlv.parse(b"\x30\x80\x00\x00")
    assert time.monotonic() - t < 1.0


def _run_chip_cases(pki, chip, seed: int, n: int) -> dict[str, int]:
    rng = random.Random(seed)
    original = dict(chip.files)
    outcomes: dict[str, int] = {}
    t = time.monotonic()
    for case in range(n):
        chip.files = dict(original)
        chip.corrupt.response = None
        if case % 2:
            fid = rng.choice([0x0101, 0x010D, 0x011D, 0x011E, 0x010F, 0x010E, 0x0102])
            chip.files[fid] = _mutate(rng, original[fid])
        else:
            target = rng.randint(1, 40)
            count = [0]

            def answer(apdu: bytes, resp: bytes, target=target, count=count) -> bytes:
                count[0] += 1
                if count[0] != target and rng.random() > 0.02:
                    return resp
                return _mutate(rng, resp) if rng.random() < 0.8 else rng.randbytes(rng.randint(0, 300))

            chip.corrupt.response = answer
        r = read_chip(chip, access_for(CARD), csca_dir=pki.csca_dir, want_dg2=bool(case % 3 == 0),
                      deadline_s=5)
        assert isinstance(r, ChipResult)
        assert r.verified in ("chain", "signature", "failed", "absent")
        assert r.verified in ("chain", "signature") or r.reason
        outcomes[r.verified] = outcomes.get(r.verified, 0) + 1
    chip.files, chip.corrupt.response = original, None
    outcomes["seconds"] = round(time.monotonic() - t)
    return outcomes


def test_read_chip_on_hostile_answers_quick(pki, chip):
    out = _run_chip_cases(pki, chip, 35, 400)
    assert out.get("failed", 0) > 100 and out.get("chain", 0) > 10, out


@pytest.mark.slow
def test_read_chip_on_hostile_answers_long(pki, chip):
    out = _run_chip_cases(pki, chip, 36, 4000)
    assert out.get("failed", 0) > 500, out
