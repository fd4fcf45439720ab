"""The PN532 transport against a stand-in PN532 (tests/support/pn532.py) on a pty, as the Pi's
UART, and as an I2C device: NXP's frames, the chip's size limits, a lifted card, a PN532 that
stops answering, an unplugged port."""

from __future__ import annotations

import os
import pty
import time

import pytest

from agent.chip.pn532 import ACK, MAX_CHUNK, Device, I2cLink, Pn532Transport, frame, parse_device
from agent.chip.readers import open_reader, reader_check
from agent.chip.transport import CardLost, ChipError
from support.pn532 import I2cPn532, Pn532Emulator, PtyPn532
from support.toy_card import SELECT_APPLET, ToyCard, read_binary
from support.wait import wait_for

DATA = bytes(range(256)) * 8


def long_command(n: int) -> bytes:
    """An extended-length command (INS EE: the toy card echoes its data)."""
    return bytes([0x00, 0xEE, 0, 0, 0x00, n >> 8, n & 0xFF]) + bytes(i % 251 for i in range(n))


def test_frames_follow_the_manual():
    # UM0701-02 6.2.1.1: GetFirmwareVersion is 00 00 FF 02 FE D4 02 2A 00
    assert frame(b"\x02") == bytes.fromhex("0000FF02FED4022A00")
    big = frame(b"\x40\x01" + bytes(300))                  # extended frame past 255 bytes
    assert big[:5] == bytes.fromhex("0000FFFFFF") and big[5:7] == (303).to_bytes(2, "big")


def test_apdus_through_a_pn532_on_the_uart():
    emu = Pn532Emulator(ToyCard(DATA))
    with PtyPn532(emu) as port:
        with open_reader("pn532", f"uart:{port.path}", 2) as t:
            assert t.firmware == (0x32, 1, 6)
            assert t.transmit(SELECT_APPLET) == b"\x90\x00"
            assert t.transmit(read_binary(0, 0xE0)) == DATA[:0xE0] + b"\x90\x00"
            # 1,502 bytes back: six parts of at most 262 bytes, each asked for by the MI bit
            assert t.transmit(read_binary(0x10, 1500)) == DATA[0x10:0x10 + 1500] + b"\x90\x00"
            # 607 bytes out: three chunks chained with Tg's MI bit, none over the frame limit
            cmd = long_command(600)
            assert t.transmit(cmd) == cmd[7:] + b"\x90\x00"
    assert emu.apdus == [SELECT_APPLET, read_binary(0, 0xE0), read_binary(0x10, 1500), cmd]
    assert 0 < emu.largest_data_out <= MAX_CHUNK
    assert port.received.startswith(b"\x55\x55")           # the HSU wake-up came first
    # passive activation retries set to 2 (the default 0xFF waits for a card for ever)
    assert b"\x32\x05\xFF\x01\x02" in emu.commands


def test_a_card_lifted_mid_read_is_card_lost_and_the_next_card_reads():
    emu = Pn532Emulator(ToyCard(DATA, lift_after=2))
    with PtyPn532(emu) as port, Pn532Transport.open(port.path, 2) as t:
        assert t.wait_for_card(1)
        assert t.transmit(SELECT_APPLET) == b"\x90\x00"
        assert t.transmit(read_binary(0, 8)) == DATA[:8] + b"\x90\x00"
        with pytest.raises(CardLost, match="did not answer"):
            t.transmit(read_binary(8, 8))
        started = time.monotonic()
        with pytest.raises(CardLost, match="no card"):
            t.transmit(read_binary(8, 8))
        assert t.wait_for_card(0.3) is False
        assert time.monotonic() - started < 2
        emu.card = ToyCard(b"Z" * 16)                       # the patient puts it back
        assert t.wait_for_card(2)
        assert t.transmit(read_binary(0, 4)) == b"ZZZZ\x90\x00"


def test_a_pn532_that_stops_answering_is_card_lost_within_the_timeout():
    emu = Pn532Emulator(ToyCard(DATA))
    with PtyPn532(emu) as port, Pn532Transport.open(port.path, 1.0) as t:
        assert t.transmit(SELECT_APPLET) == b"\x90\x00"
        emu.mute = True
        started = time.monotonic()
        with pytest.raises(CardLost, match="no answer from the PN532 within 1 s"):
            t.transmit(read_binary(0, 8))
        assert 0.9 < time.monotonic() - started < 10         # its timeout, not a hang
        assert wait_for(lambda: port.received.endswith(ACK), 10)   # the host's ACK aborts the command
        emu.mute = False
        assert t.wait_for_card(2)
        assert t.transmit(read_binary(0, 2)) == DATA[:2] + b"\x90\x00"


def test_an_unplugged_reader_is_card_lost_not_a_hang():
    emu = Pn532Emulator(ToyCard(DATA))
    port = PtyPn532(emu).start()
    t = Pn532Transport.open(port.path, 1.0)
    try:
        assert t.transmit(SELECT_APPLET) == b"\x90\x00"
        port.unplug()
        started = time.monotonic()
        with pytest.raises(CardLost):
            t.transmit(read_binary(0, 8))
        assert time.monotonic() - started < 3
    finally:
        t.close()


def test_a_card_that_is_not_a_chip_id_is_a_clear_error():
    emu = Pn532Emulator(ToyCard(DATA), sak=0x08)           # a MIFARE Classic: no ISO 14443-4
    with PtyPn532(emu) as port, Pn532Transport.open(port.path, 1.0) as t:
        with pytest.raises(ChipError, match="not an ISO 14443-4 card"):
            t.transmit(SELECT_APPLET)


def test_a_missing_or_silent_pn532_is_a_clear_error(tmp_path):
    with pytest.raises(ChipError, match="cannot open the PN532's serial port .*No such file"):
        open_reader("pn532", str(tmp_path / "ttyAMA9"), 1)
    ok, message = reader_check("pn532", str(tmp_path / "ttyAMA9"))
    assert not ok and "cannot open" in message
    master, slave = pty.openpty()                           # a port with nothing behind it
    try:
        started = time.monotonic()
        ok, message = reader_check("pn532", os.ttyname(slave), 0.5)
        assert not ok and message.startswith("no PN532 answers on") and "within 0.5 s" in message
        assert time.monotonic() - started < 3
    finally:
        os.close(master)
        os.close(slave)
    with PtyPn532(Pn532Emulator()) as port:
        assert reader_check("pn532", port.path) == (True, f"PN532 firmware 1.6 on {port.path}")


def test_apdus_through_a_pn532_on_i2c():
    emu = Pn532Emulator(ToyCard(DATA))
    t = Pn532Transport(I2cLink("/dev/i2c-1", dev=I2cPn532(emu)), timeout_s=1.0)
    t.setup()
    assert t.transmit(SELECT_APPLET) == b"\x90\x00"
    assert t.transmit(read_binary(0x20, 700)) == DATA[0x20:0x20 + 700] + b"\x90\x00"
    cmd = long_command(300)
    assert t.transmit(cmd) == cmd[7:] + b"\x90\x00"
    emu.mute = True
    with pytest.raises(CardLost, match="within 1 s"):
        t.transmit(read_binary(0, 1))


def test_device_strings():
    assert parse_device(None) == Device("uart", "/dev/serial0")
    assert parse_device("/dev/ttyUSB0") == Device("uart", "/dev/ttyUSB0")
    assert parse_device("uart:/dev/ttyAMA0@57600") == Device("uart", "/dev/ttyAMA0", 57600)
    assert parse_device("i2c:1") == Device("i2c", "/dev/i2c-1")
    assert parse_device("/dev/i2c-3") == Device("i2c", "/dev/i2c-3")
    with pytest.raises(ChipError, match="a number"):
        parse_device("/dev/ttyAMA0@fast")


def test_none_and_unknown_readers():
    assert reader_check("none", None) == (True, "no chip reader configured (chip reading off)")
    with pytest.raises(ChipError, match="no chip reader configured"):
        open_reader("none", None, 1)
    assert reader_check("nfc", None)[0] is False
    with pytest.raises(ChipError, match="unknown chip reader 'nfc'"):
        open_reader("nfc", None, 1)
