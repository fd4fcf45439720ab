"""bench/chip.py's reader model (issue 33): its counts are what the simulated chip saw, its framing
arithmetic is ISO/IEC 14443's, its time falls as the bit rate rises, its random round trips are
seeded, and its fuzz counts escaped exceptions. Nothing here times the machine."""

from __future__ import annotations

import math

import pytest

from agent.chip import files
from agent.sim.chip import SimChip, make_pki
from bench.chip import FC, Link, cases, fuzz, timed_read


class Spy(SimChip):
    """The simulated chip, counting the bytes it was sent and answered (the model's own books
    are checked against these)."""

    seen_bytes = 0

    def transmit(self, apdu: bytes) -> bytes:
        resp = super().transmit(apdu)
        self.seen_bytes += len(apdu) + len(resp)
        return resp


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def _bac_first():
    return next(c for c in cases() if c.name == "BAC, 1st expiry")


def test_counts_are_what_the_chip_saw_and_time_falls_with_the_bit_rate(pki):
    case = _bac_first()
    runs = {}
    for kbps in (106, 212, 424):
        chip = Spy(case.card, pki, pace=case.pace)
        run = timed_read(chip, case.access, Link(kbps=kbps, rtt_ms=30), want_dg2=False,
                         csca_dir=pki.csca_dir)
        assert (run.result.verified, run.result.access) == ("chain", "bac:" + case.access.expiry_candidates[0][1])
        assert run.apdus == chip.apdus and run.bytes == chip.seen_bytes
        assert run.link_s == pytest.approx(run.apdus * 0.030 + run.air_s)
        runs[kbps] = run
    assert runs[106].apdus == runs[212].apdus == runs[424].apdus
    air = [runs[k].air_s for k in (106, 212, 424)]
    assert air[0] > air[1] > air[2] > 0
    assert air[0] == pytest.approx(2 * air[1], rel=0.01) and air[1] == pytest.approx(2 * air[2], rel=0.01)
    assert runs[106].link_s > runs[212].link_s > runs[424].link_s
    assert runs[106].modelled(4) >= runs[106].modelled(1) >= runs[106].link_s


def test_a_failed_bac_attempt_costs_three_apdus(pki):
    by_name = {c.name: c for c in cases()}
    n = {}
    for name in ("BAC, 1st expiry", "BAC, 2nd expiry", "BAC, 3rd expiry"):
        c = by_name[name]
        run = timed_read(SimChip(c.card, pki, pace=False), c.access, Link(rtt_ms=20), want_dg2=False,
                         csca_dir=pki.csca_dir)
        assert run.result.verified == "chain", run.result.reason
        n[name] = run.apdus
    # SELECT applet, GET CHALLENGE, EXTERNAL AUTHENTICATE refused with 6300
    assert n["BAC, 2nd expiry"] - n["BAC, 1st expiry"] == 3
    assert n["BAC, 3rd expiry"] - n["BAC, 1st expiry"] == 6


def test_framing_by_hand():
    link = Link(kbps=106, fsd=256)
    bit = 128 / FC
    # a protected 223-byte READ BINARY answer: 244 bytes + PCB + CID + CRC_A = 248 <= 256: one block
    blocks, s = link.message(244, 256)
    assert blocks == 1 and s == pytest.approx((9 * 248 + 2) * bit)
    # 1000 bytes at FSD 64: 60 bytes of data per block -> 17 blocks, 16 R(ACK)s and turnarounds
    blocks, s = link.message(1000, 64)
    assert blocks == math.ceil(1000 / 60) == 17
    data_frames = 16 * (9 * 64 + 2) * bit + (9 * (40 + 4) + 2) * bit
    per_ack = (9 * 4 + 2) * bit + 2 * 1172 / FC + 0.001
    assert s == pytest.approx(data_frames + 16 * per_ack)
    with pytest.raises(ValueError):
        link.message(10, 4)


def test_random_round_trips_are_seeded_and_in_range(pki):
    case = _bac_first()
    chip = SimChip(case.card, pki, pace=False)
    a, b, c = (timed_read(chip, case.access, Link(rtt_ms=None, seed=seed), want_dg2=False,
                          csca_dir=None) for seed in (7, 7, 8))
    assert a.link_s == b.link_s != c.link_s
    assert 0.020 * a.apdus + a.air_s <= a.link_s <= 0.040 * a.apdus + a.air_s


def test_extended_length_chunks_take_fewer_apdus_and_chain_blocks(pki):
    case = _bac_first()
    chip = SimChip(case.card, pki, pace=False)
    short = timed_read(chip, case.access, Link(rtt_ms=20), want_dg2=False, csca_dir=None)
    long = timed_read(chip, case.access, Link(rtt_ms=20), want_dg2=False, csca_dir=None, chunk=1000)
    assert long.result.verified == short.result.verified == "signature"
    assert long.apdus < short.apdus
    assert short.blocks == 2 * short.apdus                 # 223-byte chunks never chain at FSD 256
    assert long.blocks > 2 * long.apdus
    assert files.SHORT_CHUNK == 223


def test_fuzz_counts_escaped_exceptions(pki):
    out = fuzz(pki, 40, seed=5)
    assert out["cases"] == 40 and out["tracebacks"] == 0, out["samples"]
    assert sum(out["outcomes"].values()) == 40 and out["outcomes"].get("failed", 0) > 0
