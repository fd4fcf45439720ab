"""The PC/SC transport through the whole real stack: pyscard -> libpcsclite -> a private pcscd ->
vsmartcard's vpcd driver -> TCP -> the relay -> a small card object (tests/support/vpcd.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.chip.pcsc import PcscTransport, reader_check
from agent.chip.readers import open_reader
from agent.chip.readers import reader_check as any_reader_check
from agent.chip.transport import CardLost, ChipError
from support.toy_card import SELECT_APPLET, read_binary
from support.toy_card import ToyCard as Card
from support.vpcd import VpcdRelay, _pcscd_session, pcscd_vpcd  # noqa: F401 - the fixtures

ROOT = Path(__file__).resolve().parents[1]


def test_apdus_reach_the_card_through_pcscd_and_vpcd_and_back(pcscd_vpcd):
    data = bytes(range(256)) * 8
    card = Card(data)
    with VpcdRelay(pcscd_vpcd.port, card) as relay, \
            PcscTransport(pcscd_vpcd.reader, timeout_s=5) as t:
        assert t.wait_for_card(15), pcscd_vpcd.log_tail()
        assert t.transmit(SELECT_APPLET) == b"\x90\x00"
        assert t.transmit(read_binary(0, 0xE0)) == data[:0xE0] + b"\x90\x00"
        # an extended-length READ BINARY: 1,500 bytes in one response through pcscd and vpcd
        assert t.transmit(read_binary(0x100, 1500)) == data[0x100:0x100 + 1500] + b"\x90\x00"
        assert t.transmit(bytes.fromhex("00A4040C02AAAA")[:5] + b"\xAA\xAA") == b"\x6A\x82"
    assert relay.apdus[:3] == [SELECT_APPLET, read_binary(0, 0xE0), read_binary(0x100, 1500)]
    assert relay.error is None


def test_a_card_lifted_mid_read_is_card_lost_and_the_next_card_reads(pcscd_vpcd):
    with PcscTransport(pcscd_vpcd.reader, timeout_s=5) as t:
        with VpcdRelay(pcscd_vpcd.port, Card(b"A" * 300, lift_after=2)):
            assert t.wait_for_card(15), pcscd_vpcd.log_tail()
            assert t.transmit(SELECT_APPLET) == b"\x90\x00"
            assert t.transmit(read_binary(0, 16)) == b"A" * 16 + b"\x90\x00"
            started = time.monotonic()
            with pytest.raises(CardLost):
                t.transmit(read_binary(16, 16))
            assert time.monotonic() - started < 5
            with pytest.raises(CardLost):       # still gone: no card, not a hang or a crash
                t.transmit(read_binary(16, 16))
        pcscd_vpcd.wait_card(present=False)
        with VpcdRelay(pcscd_vpcd.port, Card(b"B" * 300)):      # the patient puts the card back
            assert t.wait_for_card(15), pcscd_vpcd.log_tail()
            assert t.transmit(read_binary(0, 4)) == b"BBBB\x90\x00"


def test_a_card_that_stops_answering_is_card_lost_within_the_timeout(pcscd_vpcd):
    card = Card(b"C" * 64, hang_at=2)
    with VpcdRelay(pcscd_vpcd.port, card) as relay, PcscTransport(pcscd_vpcd.reader, timeout_s=1.5) as t:
        try:
            assert t.wait_for_card(15), pcscd_vpcd.log_tail()
            assert t.transmit(SELECT_APPLET) == b"\x90\x00"
            started = time.monotonic()
            with pytest.raises(CardLost, match="no answer"):
                t.transmit(read_binary(0, 8))
            assert 1.4 < time.monotonic() - started < 4
        finally:
            relay.lift()
            card.release.set()
    # the next card on the same reader reads again: the stuck exchange left nothing behind
    with VpcdRelay(pcscd_vpcd.port, Card(b"D" * 8)), PcscTransport(pcscd_vpcd.reader, timeout_s=5) as t:
        assert t.wait_for_card(15), pcscd_vpcd.log_tail()
        assert t.transmit(read_binary(0, 8)) == b"D" * 8 + b"\x90\x00"


def test_no_card_on_the_reader_is_card_lost_not_a_wait(pcscd_vpcd):
    with PcscTransport(pcscd_vpcd.reader, timeout_s=2) as t:
        started = time.monotonic()
        assert t.wait_for_card(0.5) is False
        with pytest.raises(CardLost, match="no card"):
            t.transmit(SELECT_APPLET)
        assert time.monotonic() - started < 3


def test_a_missing_reader_is_a_clear_error(pcscd_vpcd):
    with pytest.raises(ChipError, match=r"no PC/SC reader named like 'ACR122'; readers: Virtual PCD 00 00"):
        PcscTransport("ACR122", timeout_s=2)
    ok, message = reader_check("ACR122")
    assert not ok and "Virtual PCD 00 00" in message
    ok, message = any_reader_check("pcsc", "Virtual PCD 00 01")
    assert ok and message.startswith("PC/SC reader 'Virtual PCD 00 01'")


def test_the_factory_opens_the_pcsc_reader(pcscd_vpcd):
    with VpcdRelay(pcscd_vpcd.port, Card(b"E" * 8)):
        t = open_reader("pcsc", pcscd_vpcd.reader, 5)
        try:
            assert t.wait_for_card(15), pcscd_vpcd.log_tail()
            assert t.transmit(read_binary(0, 2)) == b"EE\x90\x00"
        finally:
            t.close()


def _in_child(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_pcscd_not_running_is_a_clear_error(tmp_path):
    r = _in_child("from agent.chip.readers import reader_check; print(reader_check('pcsc', None))",
                  PCSCLITE_CSOCK_NAME=str(tmp_path / "none.comm"))
    assert r.returncode == 0, r.stderr
    assert "(False, \"pcscd is not running" in r.stdout


def test_pyscard_missing_is_a_clear_error():
    r = _in_child("import sys; sys.modules['smartcard'] = None\n"
                  "from agent.chip.readers import reader_check, open_reader\n"
                  "print(reader_check('pcsc', None))\n"
                  "open_reader('pcsc', None, 1)")
    assert "(False, \"pyscard is not installed" in r.stdout
    assert r.stderr.strip().splitlines()[-1].startswith("agent.chip.transport.ChipError: pyscard is not installed")


@pytest.mark.parametrize("how", ["pace", "bac"])
def test_the_simulated_cccd_chip_reads_and_verifies_through_pcscd_and_vpcd(pcscd_vpcd, tmp_path, how):
    # the whole path a station uses: the terminal (PACE with the CAN, or BAC with the QR's data)
    # over pyscard, pcscd and vpcd to the simulated chip, its SOD checked up to a test CSCA
    from agent.chip import pace
    from agent.chip.access import chip_access
    from agent.chip.terminal import read_chip
    from agent.sim.chip import SimCard, SimChip, make_pki

    card = SimCard()
    pki = make_pki(tmp_path / "pki")
    access = chip_access({"id_number": card.id_number, "birth_date": card.birth_date.isoformat()},
                         card.issued, today=card.issued)
    chip = SimChip(card, pki, pace=how == "pace")
    with VpcdRelay(pcscd_vpcd.port, chip) as relay, PcscTransport(pcscd_vpcd.reader, timeout_s=5) as t:
        assert t.wait_for_card(15), pcscd_vpcd.log_tail()
        r = read_chip(t, access, csca_dir=pki.csca_dir, pace=pace.pace if how == "pace" else None)
    assert (r.verified, r.clone_check) == ("chain", "chip"), r.reason
    assert r.access == "pace-can" if how == "pace" else r.access.startswith("bac:"), r.access
    assert r.dg13["id_number"] == card.id_number and relay.error is None
