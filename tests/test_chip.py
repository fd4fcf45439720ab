"""The chip reader against the simulated CCCD chip (agent/sim/chip.py), in process: BAC, the
files, each outcome of passive authentication, active authentication, and a card that leaves."""

from __future__ import annotations

import dataclasses
import time

import pytest

from agent.chip import files, lds, tlv
from agent.chip.terminal import read_chip
from agent.chip.tlv import encode as tlv_encode
from agent.chip.transport import CardLost
from agent.sim.chip import Corrupt, SimCard, SimChip, dg13_bytes, make_pki


@dataclasses.dataclass
class Access:
    """Stands in for agent.chip.access.ChipAccess (built in parallel): the same attributes."""

    document_number: str
    id_number: str
    birth_yymmdd: str | None
    expiry_candidates: list[tuple[str, str]]
    can: str


def access_for(card: SimCard, expiries: list[tuple[str, str]] | None = None) -> Access:
    return Access(card.id_number[-9:], card.id_number, card.birth_yymmdd,
                  expiries if expiries is not None else [(card.expiry_yymmdd, "25th birthday")],
                  card.id_number[-6:])


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("other"), cn="Another CSCA")


CARD = SimCard()


def test_bac_reads_and_verifies_the_chain(pki):
    chip = SimChip(CARD, pki)
    r = read_chip(chip, access_for(CARD), csca_dir=pki.csca_dir)
    # the default SimChip offers chip authentication (DG14) and active authentication: CA ranks first
    assert (r.verified, r.clone_check, r.access, r.reason) == ("chain", "chip", "bac:25th birthday", "")
    assert r.dg1["document_number"] == CARD.id_number[-9:]
    assert r.dg1["id_number"] == CARD.id_number and r.dg1["check_digits_ok"]
    assert r.dg1["name"] == "NGUYEN VAN AN"
    d = r.dg13
    assert (d["id_number"], d["name"], d["birth_date"], d["sex"]) == (CARD.id_number, CARD.name, "14/03/1989", "Nam")
    assert (d["father"], d["mother"], d["old_id"]) == (*CARD.parents, CARD.old_id)
    assert d["residence"] == CARD.residence and d["issue_date"] == "01/07/2021"
    assert r.face_jpeg is None


def test_dg2_only_when_asked(pki):
    r = read_chip(SimChip(CARD, pki), access_for(CARD), csca_dir=pki.csca_dir, want_dg2=True)
    assert r.verified == "chain" and r.face_jpeg == CARD.face_jpeg


def test_the_second_expiry_candidate_opens_it(pki):
    acc = access_for(CARD, [("310314", "wrong rule"), (CARD.expiry_yymmdd, "40th birthday")])
    r = read_chip(SimChip(CARD, pki), acc)
    assert (r.verified, r.access) == ("signature", "bac:40th birthday")


def test_without_a_trust_store_the_chain_is_not_checked(pki):
    r = read_chip(SimChip(CARD, pki), access_for(CARD))
    assert r.verified == "signature" and "not checked" in r.reason


def test_rsa_document_signer(tmp_path):
    pki = make_pki(tmp_path, ds_rsa=True)
    r = read_chip(SimChip(CARD, pki), access_for(CARD), csca_dir=pki.csca_dir)
    assert r.verified == "chain", r.reason


def test_unknown_csca_fails(pki, other_pki):
    r = read_chip(SimChip(CARD, pki), access_for(CARD), csca_dir=other_pki.csca_dir)
    assert r.verified == "failed" and "not issued by a CSCA" in r.reason


def test_a_changed_dg13_fails_its_hash(pki):
    forged = dg13_bytes(dataclasses.replace(CARD, name="Lê Thị Giả"))
    r = read_chip(SimChip(CARD, pki, corrupt=Corrupt(files={0x010D: forged})), access_for(CARD),
                  csca_dir=pki.csca_dir)
    assert r.verified == "failed" and r.reason == "DG13 does not match its hash in the SOD"


def test_a_bad_signature_fails(pki):
    r = read_chip(SimChip(CARD, pki, corrupt=Corrupt(bad_signature=True)), access_for(CARD),
                  csca_dir=pki.csca_dir)
    assert r.verified == "failed" and "signature does not verify" in r.reason


def test_an_expired_document_signer_fails(tmp_path):
    pki = make_pki(tmp_path, ds_expired=True)
    r = read_chip(SimChip(CARD, pki), access_for(CARD), csca_dir=pki.csca_dir)
    assert r.verified == "failed" and "DS certificate not valid today" in r.reason


def test_wrong_keys_are_absent(pki):
    r = read_chip(SimChip(CARD, pki), access_for(CARD, [("300101", "a"), ("350101", "b")]))
    assert (r.verified, r.access, r.dg1) == ("absent", None, None)
    assert r.reason == "the chip refused the keys (2 expiry dates tried)"


def test_no_birth_date_is_absent(pki):
    acc = dataclasses.replace(access_for(CARD), birth_yymmdd=None)
    r = read_chip(SimChip(CARD, pki), acc)
    assert r.verified == "absent" and "no birth date" in r.reason


class NoCard:
    def transmit(self, apdu: bytes) -> bytes:
        raise CardLost("no card in the field")


def test_no_card_is_absent():
    r = read_chip(NoCard(), access_for(CARD))
    assert r.verified == "absent" and "no card" in r.reason


def test_a_qr_of_another_person_fails(pki):
    other = dataclasses.replace(access_for(CARD), id_number="079123456789")
    r = read_chip(SimChip(CARD, pki), other, csca_dir=pki.csca_dir)
    assert r.verified == "failed" and "differs from the QR" in r.reason


@pytest.mark.parametrize("kind", [True, "ec"])
def test_active_authentication_fails_with_a_cloned_key(pki, kind):
    good = read_chip(SimChip(CARD, pki, aa=kind, ca=False), access_for(CARD), csca_dir=pki.csca_dir)
    assert good.clone_check == "active", good.reason
    clone = SimChip(CARD, pki, aa=kind, ca=False, corrupt=Corrupt(aa_wrong_key=True))
    r = read_chip(clone, access_for(CARD), csca_dir=pki.csca_dir)
    assert (r.verified, r.clone_check) == ("chain", "failed")
    assert "active authentication" in r.reason


def test_a_clone_whose_ef_com_hides_dg15_still_gets_the_clone_check(pki):
    # EF.COM is not signed: a clone that lists no DG15 in it (and holds no AA key) skipped active
    # authentication and read as chain / none; the groups to read come from the signed SOD
    com = tlv_encode(0x60, tlv_encode(0x5F01, b"0107") + tlv_encode(0x5F36, b"040000")
                     + tlv_encode(0x5C, bytes([0x61, 0x6D])))
    clone = SimChip(CARD, pki, corrupt=Corrupt(files={files.FID_COM: com}, aa_wrong_key=True))
    r = read_chip(clone, access_for(CARD), csca_dir=pki.csca_dir)
    assert (r.verified, r.clone_check) == ("chain", "failed"), r.reason
    honest = SimChip(CARD, pki, corrupt=Corrupt(files={files.FID_COM: com}))
    # "chip": DG14, hidden from EF.COM too, is read from the SOD's list and chip authentication runs
    assert read_chip(honest, access_for(CARD), csca_dir=pki.csca_dir).clone_check == "chip"


def test_a_face_too_large_to_read_leaves_the_rest_verified(pki):
    big = dataclasses.replace(CARD, face_jpeg=b"\xff\xd8" + bytes(40_000) + b"\xff\xd9")
    r = read_chip(SimChip(big, pki), access_for(big), csca_dir=pki.csca_dir, want_dg2=True)
    assert (r.verified, r.clone_check, r.face_jpeg) == ("chain", "chip", None)
    assert "face not read" in r.reason


def test_no_aa_key_means_no_clone_check(pki):
    r = read_chip(SimChip(CARD, pki, aa=False, ca=False), access_for(CARD), csca_dir=pki.csca_dir)
    assert (r.verified, r.clone_check) == ("chain", "none")


def test_card_lifted_mid_read(pki):
    whole = SimChip(CARD, pki)
    read_chip(whole, access_for(CARD))
    seen = set()
    for n in range(1, whole.apdus):
        r = read_chip(SimChip(CARD, pki, lift_after=n), access_for(CARD))
        assert r.verified == "absent" and ("lifted" in r.reason or "no card" in r.reason), r
        seen.add(r.reason.split(":")[0])
    assert "card lifted while reading DG13" in seen


def test_a_slow_link_reads_within_the_deadline_or_says_so(pki):
    t = time.monotonic()
    r = read_chip(SimChip(CARD, pki, latency=0.01), access_for(CARD), deadline_s=0.2)
    assert r.verified == "absent" and "deadline" in r.reason
    assert time.monotonic() - t < 1.0
    r = read_chip(SimChip(CARD, pki, latency=0.002), access_for(CARD), deadline_s=10)
    assert r.verified == "signature"


def test_extended_length_chunks(pki):
    r = read_chip(SimChip(CARD, pki), access_for(CARD), csca_dir=pki.csca_dir, want_dg2=True, chunk=1000)
    assert r.verified == "chain" and r.face_jpeg == CARD.face_jpeg


def test_files_need_a_session(pki):
    chip = SimChip(CARD, pki)
    files.select_applet(chip)
    with pytest.raises(files.Denied):
        files.read_file(chip, None, files.DG_FID[1], 1024)


def test_a_file_longer_than_its_limit_is_refused_before_reading(pki):
    huge = b"\x6d\x83\x01\x00\x00" + b"\x00" * 10      # claims 65536 bytes, holds 10
    r = read_chip(SimChip(CARD, pki, corrupt=Corrupt(files={0x010D: huge})), access_for(CARD))
    assert r.verified == "failed" and "more than 8192" in r.reason


def test_dg13_without_spouse_and_with_unknown_fields():
    body = b"".join(tlv.encode(0x30, tlv.encode(0x02, bytes([n])) + tlv.encode(0x0C, s.encode()))
                    for n, s in [(1, "001089012345"), (2, "Trần B"), (16, "123456789"), (30, "?")])
    data = tlv.encode(0x6D, tlv.encode(0x30, tlv.encode(0x02, b"\x01")
                                       + tlv.encode_oid("1.0.10646.1.0.8") + tlv.encode(0x31, body)))
    d = lds.parse_dg13(data)
    assert d == {"version": 1, "id_number": "001089012345", "name": "Trần B", "old_id": "123456789"}


def test_a_file_shorter_than_its_length_says_where_it_ended(pki):
    short = tlv.encode(0x6D, b"\x00" * 300)[:120]      # claims 300 bytes, holds 116
    r = read_chip(SimChip(CARD, pki, corrupt=Corrupt(files={0x010D: short})), access_for(CARD))
    assert r.verified == "failed" and r.reason == "reading DG13: file 010D ended at 120 of 304 bytes"


def test_an_answer_with_a_bad_mac_fails_the_read(pki):
    def flip(apdu: bytes, resp: bytes) -> bytes:
        return resp[:-3] + bytes([resp[-3] ^ 1]) + resp[-2:] if apdu[1] == 0xB0 and len(resp) > 20 else resp

    r = read_chip(SimChip(CARD, pki, corrupt=Corrupt(response=flip)), access_for(CARD))
    assert r.verified == "failed" and r.reason == "reading EF.COM: answer MAC does not verify"


def test_pace_callable_falls_back_to_bac_when_the_chip_has_no_card_access(pki):
    calls = []

    def pace(transport, can, card_access):
        calls.append(can)
        raise AssertionError("not reached: the chip has no EF.CardAccess")

    r = read_chip(SimChip(CARD, pki, pace=False), access_for(CARD), pace=pace)
    assert (r.verified, r.access, calls) == ("signature", "bac:25th birthday", [])


def test_a_refusing_pace_falls_back_to_bac(pki):
    chip = SimChip(CARD, pki, pace=False)
    chip.files[files.FID_CARD_ACCESS] = tlv.encode(0x31, b"")      # a CardAccess, no PACE on it

    def pace(transport, can, card_access):
        assert (can, card_access) == (CARD.id_number[-6:], b"\x31\x00")
        raise files.ChipError("PACE refused")

    r = read_chip(chip, access_for(CARD), pace=pace)
    assert (r.verified, r.access) == ("signature", "bac:25th birthday")
