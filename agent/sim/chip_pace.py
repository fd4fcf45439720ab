"""The card side of PACE for the simulated CCCD chip (ICAO Doc 9303 Part 11, 4.4).

agent/sim/chip.py hands MSE:Set AT (INS 22, P1P2 C1A4) and GENERAL AUTHENTICATE (INS 86) to
`PaceCard.handle`; once it returns an AesSM (after a good terminal token), the chip protects the
rest of the session with it (`unwrap_command` / `wrap_response`). EF.CardAccess (FID 011C) is
`card_access_bytes()`. The status words are those of 9303-11 4.4.4 and ISO/IEC 7816-4: 6300 for a
wrong token (the terminal used another CAN), 6985 for a command out of sequence, 6A80 for bad data.
Any failure ends the PACE attempt; the terminal starts again with MSE:Set AT.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Callable

from agent.chip import pace as P
from agent.chip.sm_aes import AesSM, SmError, parse_apdu

OK = b"\x90\x00"
WRONG_TOKEN = b"\x63\x00"
WRONG_LENGTH = b"\x67\x00"
NOT_NOW = b"\x69\x85"
BAD_DATA = b"\x6A\x80"
BAD_P1P2 = b"\x6A\x86"
NOT_FOUND = b"\x6A\x88"
BAD_INS = b"\x6D\x00"


def card_access_bytes(param_id: int = 13, key_len: int = 16) -> bytes:
    """EF.CardAccess with one PACEInfo: id-PACE-ECDH-GM-AES-CBC-CMAC-(8*key_len), version 2,
    the given standardized parameter ID (any 0..127, so tests can offer ones the reader refuses)."""
    info = P.tlv(0x06, P.pace_oid(key_len)) + P.tlv(0x02, b"\x02") + P.tlv(0x02, bytes([param_id]))
    return P.tlv(0x31, P.tlv(0x30, info))


class PaceCard:
    """One chip's PACE: the CAN it was issued with and its parameters, as a standardized parameter
    ID (with `key_len`) or as the chip's own EF.CardAccess (its first PACEInfo). `password`/`pw_ref`,
    `nonce` and `keygen` let a test play the card of a published worked example (the MRZ password,
    the chip's nonce s and ephemeral keys)."""

    def __init__(self, can: str, param_id: int | bytes = 13, *, key_len: int = 16,
                 password: bytes | None = None, pw_ref: int = P.PW_CAN,
                 nonce: bytes | None = None, keygen: Callable[[int], int] | None = None) -> None:
        if isinstance(param_id, (bytes, bytearray)):
            infos = P.parse_card_access(bytes(param_id))
            if not infos or infos[0].param_id is None or not infos[0].key_len:
                raise ValueError("the chip's EF.CardAccess has no PACEInfo it could run")
            param_id, key_len = infos[0].param_id, infos[0].key_len
        # parameters the reader does not do (a test's card offering brainpoolP384r1, say) get
        # MSE:Set AT refused: a terminal that sent it anyway would learn nothing more
        self.curve = P.CURVES.get(param_id)
        self.param_id = param_id
        self.key_len = key_len
        self.oid = P.pace_oid(key_len)
        self.password = can.encode("ascii") if password is None else password
        self.pw_ref = pw_ref
        self._fixed_nonce = nonce
        self._keygen = keygen or P.random_scalar
        self._reset()

    def _reset(self) -> None:
        self.state = "idle"
        self._s = 0
        self._g: P.Point | None = None
        self._pk_dh_ifd = b""
        self._pk_dh_ic = b""
        self._keys: tuple[bytes, bytes] | None = None

    def _fail(self, sw: bytes) -> tuple[bytes, None]:
        self._reset()
        return sw, None

    def handle(self, apdu: bytes) -> tuple[bytes, AesSM | None]:
        """Answer one plain APDU (data + SW1 SW2); the AesSM once mutual authentication is done."""
        try:
            header, data, _le, _ext = parse_apdu(bytes(apdu))
        except SmError:
            return self._fail(WRONG_LENGTH)
        cla, ins, p1, p2 = header
        if ins == 0x22:
            return self._mse_set_at(p1, p2, data)
        if ins != 0x86:
            return self._fail(BAD_INS)
        if p1 or p2:
            return self._fail(BAD_P1P2)
        try:
            objects = P.read_dynamic_auth(data, max_items=2)
        except P.PaceError:
            return self._fail(BAD_DATA)
        step = {"set": 1, "nonce": 2, "mapped": 3, "agreed": 4}.get(self.state)
        if step is None or cla != (0x10 if step < 4 else 0x00):
            return self._fail(NOT_NOW)
        try:
            steps = {1: self._step1, 2: self._step2, 3: self._step3, 4: self._step4}
            return steps[step](objects)
        except P.PaceError:
            return self._fail(BAD_DATA)

    def _mse_set_at(self, p1: int, p2: int, data: bytes) -> tuple[bytes, None]:
        if (p1, p2) != (0xC1, 0xA4):
            return self._fail(BAD_P1P2)
        try:
            objects = dict(P.read_tlvs(data, max_items=4))
        except P.PaceError:
            return self._fail(BAD_DATA)
        if objects.get(0x80) != self.oid or self.curve is None:
            return self._fail(NOT_FOUND)
        if objects.get(0x83) != bytes([self.pw_ref]):
            return self._fail(NOT_FOUND)
        if 0x84 in objects and objects[0x84] != bytes([self.param_id]):
            return self._fail(NOT_FOUND)
        self._reset()
        self.state = "set"
        return OK, None

    @staticmethod
    def _one(objects: list[tuple[int, bytes]], tag: int) -> bytes:
        if len(objects) != 1 or objects[0][0] != tag:
            raise P.PaceError(f"expected DO {tag:02X}")
        return objects[0][1]

    def _step1(self, objects: list[tuple[int, bytes]]) -> tuple[bytes, None]:
        if objects:
            raise P.PaceError("step 1 carries no data")
        s = self._fixed_nonce or secrets.token_bytes(16)
        self._s = int.from_bytes(s, "big")
        z = P.aes_cbc(P.nonce_key(self.password, self.key_len), s, decrypt=False)
        self.state = "nonce"
        return P.dynamic_auth(P.tlv(0x80, z)) + OK, None

    def _step2(self, objects: list[tuple[int, bytes]]) -> tuple[bytes, None]:
        c = self.curve
        assert c is not None      # MSE:Set AT refuses parameters without a curve
        pk_map_ifd = P.decode_point(c, self._one(objects, 0x81))
        sk_map = self._keygen(c.n)
        pk_map = P.base_mul(c, sk_map)
        if pk_map == pk_map_ifd:
            raise P.PaceError("the terminal's mapping key equals the chip's")
        h = P.mul(c, sk_map, pk_map_ifd)
        if h is None:
            raise P.PaceError("the shared point is the point at infinity")
        self._g = P.generic_mapping(c, self._s, h)
        self.state = "mapped"
        return P.dynamic_auth(P.tlv(0x82, P.encode_point(c, pk_map))) + OK, None

    def _step3(self, objects: list[tuple[int, bytes]]) -> tuple[bytes, None]:
        c = self.curve
        assert c is not None
        raw = self._one(objects, 0x83)
        pk_dh_ifd = P.decode_point(c, raw)
        assert self._g is not None
        sk_dh = self._keygen(c.n)
        pk_dh = P.mul(c, sk_dh, self._g)
        if pk_dh is None or pk_dh == pk_dh_ifd:
            raise P.PaceError("the terminal's ephemeral key equals the chip's")
        shared = P.ecdh_x(c, sk_dh, pk_dh_ifd)
        self._keys = (P.kdf(shared, 1, self.key_len), P.kdf(shared, 2, self.key_len))
        self._pk_dh_ifd = raw
        self._pk_dh_ic = P.encode_point(c, pk_dh)
        self.state = "agreed"
        return P.dynamic_auth(P.tlv(0x84, self._pk_dh_ic)) + OK, None

    def _step4(self, objects: list[tuple[int, bytes]]) -> tuple[bytes, AesSM | None]:
        assert self._keys is not None
        ks_enc, ks_mac = self._keys
        t_ifd = self._one(objects, 0x85)
        if not hmac.compare_digest(t_ifd, P.auth_token(ks_mac, self.oid, self._pk_dh_ic)):
            return self._fail(WRONG_TOKEN)
        t_ic = P.auth_token(ks_mac, self.oid, self._pk_dh_ifd)
        self._reset()
        return P.dynamic_auth(P.tlv(0x86, t_ic)) + OK, AesSM(ks_enc, ks_mac, 0)
