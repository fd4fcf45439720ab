"""Chip authentication (ICAO 9303-11 6.2) against the simulated chip: a chip holding DG14's private
key gives clone_check "chip", a copy without it "failed", a chip without CA active authentication
as before, and hostile DG14s a one-line reason."""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.chip import files, lds, tlv
from agent.chip.pace import CURVES, pace
from agent.chip.terminal import read_chip
from agent.chip.tlv import encode as T, encode_oid
from agent.sim.chip import Corrupt, SimCard, SimChip, ca_security_infos, make_pki, sod_bytes
from test_chip import access_for

CARD = SimCard()
DG14 = files.DG_FID[14]
AA_INFO = T(0x30, encode_oid("2.23.136.1.1.5") + T(0x02, b"\x01") + encode_oid("1.2.840.10045.4.3.2"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def _read(chip, pki, with_pace=False):
    return read_chip(chip, access_for(CARD), csca_dir=pki.csca_dir, pace=pace if with_pace else None)


def _resigned(chip: SimChip, pki, dg14: bytes) -> SimChip:
    """The chip with another DG14 that its SOD signs (so the read reaches chip authentication)."""
    chip.files[DG14] = dg14
    groups = {n: chip.files[files.DG_FID[n]] for n in (1, 2, 13, 14, 15) if files.DG_FID[n] in chip.files}
    chip.files[files.FID_SOD] = sod_bytes(groups, pki)
    return chip


def _dg14(*infos: bytes) -> bytes:
    return T(0x6E, T(0x31, b"".join(infos)))


@pytest.mark.parametrize("ca", [True, "3des"])
@pytest.mark.parametrize("with_pace", [False, True])
def test_chip_authentication_passes_as_chip(pki, ca, with_pace):
    chip = SimChip(CARD, pki, ca=ca)
    r = _read(chip, pki, with_pace)
    assert (r.verified, r.clone_check, r.reason) == ("chain", "chip", "")
    assert r.access == ("pace-can" if with_pace else "bac:25th birthday")
    assert chip.sm is not None and chip.sm.ssc > 0 and chip.ca_sm is None   # the chip is in the CA session


@pytest.mark.parametrize("ca", [True, "3des"])
@pytest.mark.parametrize("aa", [True, "ec", False])
def test_a_clone_without_the_ca_private_key_fails(pki, ca, aa):
    clone = SimChip(CARD, pki, ca=ca, aa=aa, corrupt=Corrupt(ca_wrong_key=True))
    r = _read(clone, pki)
    assert (r.verified, r.clone_check) == ("chain", "failed")
    assert "cannot answer under the chip authentication keys" in r.reason


def test_ca_and_aa_both_pass_gives_chip_but_a_failed_aa_still_fails(pki):
    assert _read(SimChip(CARD, pki, aa="ec"), pki).clone_check == "chip"
    r = _read(SimChip(CARD, pki, corrupt=Corrupt(aa_wrong_key=True)), pki)
    assert (r.clone_check, r.reason) == ("failed", "active authentication signature does not verify (a cloned chip?)")


@pytest.mark.parametrize("aa", [True, "ec"])
def test_a_chip_without_ca_gets_active_authentication_as_before(pki, aa):
    r = _read(SimChip(CARD, pki, ca=False, aa=aa), pki)
    assert (r.verified, r.clone_check, r.reason) == ("chain", "active", "")


def test_a_chip_without_dg14_or_dg15_has_no_clone_check(pki):
    chip = SimChip(CARD, pki, ca=False, aa=False)
    assert DG14 not in chip.files
    assert _read(chip, pki).clone_check == "none"


def test_explicit_domain_parameters_are_recognised(pki):
    """Many eMRTDs write the curve out (RFC 3279 ECParameters) rather than name it."""
    chip = SimChip(CARD, pki, aa=False)
    c = CURVES[13]
    pub = chip.ca_key.public_key().public_bytes(serialization.Encoding.X962,
                                                serialization.PublicFormat.UncompressedPoint)

    def i(n: int) -> bytes:
        return T(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big"))

    params = T(0x30, T(0x02, b"\x01") + T(0x30, encode_oid("1.2.840.10045.1.1") + i(c.p))
               + T(0x30, T(0x04, c.a.to_bytes(32, "big")) + T(0x04, c.b.to_bytes(32, "big")))
               + T(0x04, b"\x04" + c.gx.to_bytes(32, "big") + c.gy.to_bytes(32, "big")) + i(c.n) + i(1))
    spki = T(0x30, T(0x30, encode_oid("1.2.840.10045.2.1") + params) + T(0x03, b"\x00" + pub))
    dg14 = _dg14(T(0x30, encode_oid("0.4.0.127.0.7.2.2.3.2.2") + T(0x02, b"\x01")),
                 T(0x30, encode_oid("0.4.0.127.0.7.2.2.1.2") + spki))
    assert lds.parse_dg14_ca(dg14).curve == 13
    assert _read(_resigned(chip, pki, dg14), pki).clone_check == "chip"


def _with_point(chip: SimChip, point: bytes) -> bytes:
    spki = chip.ca_key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    node = tlv.parse(spki)
    alg = node.children[0].raw
    return _dg14(T(0x30, encode_oid("0.4.0.127.0.7.2.2.3.2.2") + T(0x02, b"\x01")),
                 T(0x30, encode_oid("0.4.0.127.0.7.2.2.1.2") + T(0x30, alg + T(0x03, b"\x00" + point))))


def _hostile(chip: SimChip) -> dict[str, tuple[bytes, str]]:
    good = chip.ca_key.public_key().public_bytes(serialization.Encoding.X962,
                                                 serialization.PublicFormat.UncompressedPoint)
    off_curve = good[:-1] + bytes([good[-1] ^ 1])
    inner_too_long = b"\x30\x81\xf0" + encode_oid("0.4.0.127.0.7.2.2.3.2.2")
    return {
        "point not on the curve": (_with_point(chip, off_curve), "not on brainpoolP256r1"),
        "point too short": (_with_point(chip, good[:40]), "not an uncompressed brainpoolP256r1 point"),
        "bad inner length": (T(0x6E, T(0x31, inner_too_long)), "chip authentication:"),
        "no public key": (_dg14(T(0x30, encode_oid("0.4.0.127.0.7.2.2.3.2.2") + T(0x02, b"\x01"))),
                          "without a public key"),
        "version 2": (_dg14(T(0x30, encode_oid("0.4.0.127.0.7.2.2.3.2.2") + T(0x02, b"\x02")),
                            *ca_security_infos(chip.ca_key.public_key())[1:]), "version is not 1"),
        "not a SET": (T(0x6E, T(0x30, b"")), "not a SET of SecurityInfos"),
    }


@pytest.mark.parametrize("case", ["point not on the curve", "point too short", "bad inner length",
                                  "no public key", "version 2", "not a SET"])
def test_a_hostile_signed_dg14_fails_the_clone_check_with_a_reason(pki, case):
    chip = SimChip(CARD, pki, aa=False)
    dg14, why = _hostile(chip)[case]
    r = _read(_resigned(chip, pki, dg14), pki)
    assert (r.verified, r.clone_check) == ("chain", "failed"), r.reason
    assert why in r.reason and "\n" not in r.reason


def test_unknown_security_infos_are_ignored(pki):
    """9303-11 9.2: a terminal ignores SecurityInfos it does not know (a DH CA variant is a note)."""
    chip = SimChip(CARD, pki, ca=False, aa="ec")
    unknown = T(0x30, encode_oid("1.2.3.4.5") + T(0x02, b"\x07"))
    r = _read(_resigned(chip, pki, _dg14(unknown, AA_INFO)), pki)
    assert (r.verified, r.clone_check, r.reason) == ("chain", "active", "")
    assert lds.parse_dg14_ca(_dg14(unknown, AA_INFO)) is None


def test_a_forged_unsigned_dg14_fails_passive_authentication(pki):
    """A clone that swaps DG14's key for one it holds changes DG14's hash: EF.SOD catches it."""
    own = ec.generate_private_key(ec.BrainpoolP256R1())
    forged = _dg14(*ca_security_infos(own.public_key()))
    chip = SimChip(CARD, pki, corrupt=Corrupt(files={DG14: forged}))
    chip.ca_key = own
    r = _read(chip, pki)
    assert r.verified == "failed" and "DG14" in r.reason


def test_dg14_parser_raises_only_tlv_errors_on_damage(pki):
    chip = SimChip(CARD, pki, aa="ec")
    base = chip.files[DG14]
    rng = random.Random(14)
    outcomes = {"none": 0, "info": 0, "error": 0}
    for _ in range(3000):
        b = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        try:
            outcomes["info" if lds.parse_dg14_ca(bytes(b)) else "none"] += 1
        except tlv.TlvError:
            outcomes["error"] += 1
    assert outcomes["error"] > 100 and outcomes["info"] > 100
