"""BAC and 3DES secure messaging against the worked example of ICAO Doc 9303 Part 11 (8th edition,
2021), Appendix D: D.2 key derivation from the MRZ, D.3 authentication and session keys, D.4
secure messaging (SELECT EF.COM, two READ BINARY). Every hex value below is the appendix's."""

from __future__ import annotations

import pytest

from agent.chip import bac, sm
from agent.chip.transport import ChipError

H = bytes.fromhex

# D.2: document number L898902C<, birth 690806, expiry 940623
MRZ_INFO = "L898902C<369080619406236"
KSEED = H("239AB9CB282DAF66231DC5A4DF6BFBAE")
KENC = H("AB94FDECF2674FDFB9B391F85D7F76F2")
KMAC = H("7962D9ECE03D1ACD4C76089DCE131543")
# D.3
RND_IC = H("4608F91988702212")
RND_IFD = H("781723860C06C226")
K_IFD = H("0B795240CB7049B01C19B33E32804F0B")
CMD_DATA = H("72C29C2371CC9BDB65B779B8E8D37B29ECC154AA56A8799FAE2F498F76ED92F25F1448EEA8AD90A7")
RESP_DATA = H("46B9342A41396CD7386BF5803104D7CEDC122B9132139BAF2EEDC94EE178534F2F2D235D074D7449")
KS_ENC = H("979EC13B1CBFE9DCD01AB0FED307EAE5")
KS_MAC = H("F1CB1F1FB5ADF208806B89DC579DC1F8")
SSC = H("887022120C06C226")


def test_mrz_info_and_kseed():
    assert bac.mrz_info("L898902C", "690806", "940623") == MRZ_INFO
    assert bac.kseed(MRZ_INFO) == KSEED


def test_derive_keys():
    assert bac.derive_key(KSEED, 1) == KENC
    assert bac.derive_key(KSEED, 2) == KMAC


def test_check_digit_of_a_cccd_document_number():
    # ICAO 9303-3 4.9 example: 520727 -> 3
    assert bac.check_digit("520727") == "3"


class Replay:
    """The card's side of the appendix's exchange: checks each command APDU against the one the
    appendix shows and answers with the appendix's response."""

    def __init__(self, pairs):
        self.pairs = list(pairs)

    def transmit(self, apdu: bytes) -> bytes:
        want, answer = self.pairs.pop(0)
        assert apdu.hex().upper() == want.hex().upper()
        return answer


def test_bac_mutual_authentication_and_session_keys():
    card = Replay([
        (H("0084000008"), RND_IC + H("9000")),
        (H("0082000028") + CMD_DATA + H("28"), RESP_DATA + H("9000")),
    ])
    s = bac.bac(card, MRZ_INFO, rnd_ifd=RND_IFD, k_ifd=K_IFD)
    assert (s.ks_enc, s.ks_mac, s.ssc_bytes()) == (KS_ENC, KS_MAC, SSC)


def test_bac_refused_keys_are_access_denied():
    card = Replay([
        (H("0084000008"), RND_IC + H("9000")),
        (H("0082000028") + CMD_DATA + H("28"), H("6300")),
    ])
    with pytest.raises(bac.AccessDenied):
        bac.bac(card, MRZ_INFO, rnd_ifd=RND_IFD, k_ifd=K_IFD)


def test_bac_answer_with_a_bad_mac_is_refused():
    bad = RESP_DATA[:-1] + bytes([RESP_DATA[-1] ^ 1])
    card = Replay([
        (H("0084000008"), RND_IC + H("9000")),
        (H("0082000028") + CMD_DATA + H("28"), bad + H("9000")),
    ])
    with pytest.raises(ChipError):
        bac.bac(card, MRZ_INFO, rnd_ifd=RND_IFD, k_ifd=K_IFD)


def test_secure_messaging_worked_example():
    s = sm.DesSM(KS_ENC, KS_MAC, SSC)
    # D.4.1 SELECT EF.COM
    assert s.wrap(H("00A4020C02011E")) == H("0CA4020C158709016375432908C044F68E08BF8B92D635FF24F800")
    assert s.unwrap(H("990290008E08FA855A5D4C50A8ED9000")) == H("9000")
    # D.4.2 READ BINARY of the first four bytes
    assert s.wrap(H("00B0000004")) == H("0CB000000D9701048E08ED6705417E96BA5500")
    assert s.unwrap(H("8709019FF0EC34F9922651990290008E08AD55CC17140B2DED9000")) == H("60145F019000")
    # D.4.3 READ BINARY of the remaining 18 bytes from offset 4
    assert s.wrap(H("00B0000412")) == H("0CB000040D9701128E082EA28A70F3C7B53500")
    answer = H("871901FB9235F4E4037F2327DCC8964F1F9B8C30F42C8E2FFF224A990290008E08C8B2787EAEA07D749000")
    assert s.unwrap(answer) == H("04303130365F36063034303030305C0261759000")
    assert s.ssc_bytes() == H("887022120C06C22C")


def test_secure_messaging_refuses_a_changed_answer():
    s = sm.DesSM(KS_ENC, KS_MAC, SSC)
    s.wrap(H("00A4020C02011E"))
    with pytest.raises(sm.SMError):
        s.unwrap(H("990290008E08FA855A5D4C50A8EE9000"))


def test_card_side_reads_what_the_terminal_sends():
    term, card = sm.DesSM(KS_ENC, KS_MAC, SSC), sm.DesSM(KS_ENC, KS_MAC, SSC)
    for apdu in (H("00A4020C02011E"), H("00B0000412"), H("00B00000") + H("000100")):
        h, data, le = card.unwrap_command(term.wrap(apdu))
        plain_h, plain_data, plain_le, _ = sm.split_apdu(apdu)
        assert (h, data, le) == (plain_h, plain_data, plain_le)
        assert term.unwrap(card.wrap_response(b"\x01\x02", b"\x90\x00")) == H("01029000")
