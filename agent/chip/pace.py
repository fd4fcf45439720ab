"""PACE with the card access number (CAN): the terminal side (ICAO Doc 9303 Part 11, 4.4).

The CCCD's chip answers PACE; the CAN is printed on the card, and public CCCD readers use the last
6 digits of the 12-digit ID number. Supported: PACE-ECDH-GM-AES-CBC-CMAC-128/192/256 (generic
mapping, 4.4.3.3.1) on brainpoolP256r1 (standardized parameter ID 13) or NIST P-256 (ID 12);
anything else EF.CardAccess offers is refused with the reason.

Steps (4.4.4): MSE:Set AT names the protocol, the CAN (password reference 02) and, when
EF.CardAccess lists several PACEInfos, the parameter ID; then four GENERAL AUTHENTICATE
commands (the first three chained, CLA 10):
1. the chip's nonce z, enciphered with K_pi = KDF(CAN, 3) (9.7.3): s = D(K_pi, z);
2. mapping keys exchanged: H = SK_map,IFD * PK_map,IC, the mapped generator G' = s*G + H;
3. ephemeral keys on G' exchanged: K = x(SK_DH,IFD * PK_DH,IC), KSenc = KDF(K, 1),
   KSmac = KDF(K, 2) (9.7.1: SHA-1 for AES-128, SHA-256 for AES-192/256);
4. tokens: T_IFD = CMAC(KSmac, 7F49{06 OID, 86 PK_DH,IC}) sent, T_IC = CMAC over PK_DH,IFD checked.
A card given a wrong CAN finds T_IFD wrong and answers 6300.

The `cryptography` package does the AES, CMAC, ECDH and k*G. It does not multiply an arbitrary
point (the mapped generator G', the chip's mapping key) nor add points, so this module has a small
pure-Python arithmetic for those two steps only: the curve's constants from RFC 5639 3.4
(brainpoolP256r1) and SEC 2 2.4.2 (secp256r1), every received point checked to be on the curve
(both curves have cofactor 1, so that is subgroup membership too), Jacobian coordinates inside
(one inversion per multiplication), affine points in and out, loops bounded by the order's bit
length. Its timing depends on the scalar: the scalars are fresh ephemeral keys used once.

Every card answer is hostile: TLV lengths are checked against the bytes present before use, and
anything wrong raises `PaceError` with a one-line reason (the transport's own CardLost passes
through untouched).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Callable, Protocol

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from agent.chip.sm_aes import AesSM, read_objects

PW_MRZ = 0x01
PW_CAN = 0x02
MAX_CARD_ACCESS = 4096     # EF.CardAccess is a few dozen bytes; a larger one is refused unparsed
MAX_INFOS = 32             # SecurityInfos in it
MAX_ANSWER = 65538         # data + SW of the longest (extended) answer


class PaceError(ValueError):
    """PACE failed: wrong CAN, parameters this reader does not do, or a malformed card answer.
    A ValueError (a bad value from the card or the QR): agent/chip/terminal.py catches ChipError
    and ValueError, so this needs no import of the transport module."""


class Transport(Protocol):
    """agent/chip/transport.py's Transport (repeated here as a protocol, duck-typed)."""

    def transmit(self, apdu: bytes) -> bytes: ...


# ---- protocol identifiers (9303-11 9.2.3, 4.4.4.1 Table of standardized domain parameters) -------

_ID_PACE = bytes.fromhex("04007F0007020204")          # 0.4.0.127.0.7.2.2.4
_PACE_KINDS = {1: "DH-GM", 2: "ECDH-GM", 3: "DH-IM", 4: "ECDH-IM", 6: "ECDH-CAM"}
_PACE_CIPHERS = {1: ("3DES-CBC-CBC", 0), 2: ("AES-CBC-CMAC-128", 16), 3: ("AES-CBC-CMAC-192", 24),
                 4: ("AES-CBC-CMAC-256", 32)}
PARAM_NAMES = {
    0: "1024-bit MODP group", 1: "2048-bit MODP group (224-bit subgroup)",
    2: "2048-bit MODP group (256-bit subgroup)", 8: "NIST P-192", 9: "brainpoolP192r1",
    10: "NIST P-224", 11: "brainpoolP224r1", 12: "NIST P-256", 13: "brainpoolP256r1",
    14: "brainpoolP320r1", 15: "NIST P-384", 16: "brainpoolP384r1", 17: "brainpoolP512r1",
    18: "NIST P-521",
}


def pace_oid(key_len: int = 16) -> bytes:
    """DER body of id-PACE-ECDH-GM-AES-CBC-CMAC-128/192/256 for a 16/24/32-byte key."""
    last = {16: 2, 24: 3, 32: 4}[key_len]
    return _ID_PACE + bytes([2, last])


# ---- curves ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Curve:
    name: str
    p: int
    a: int
    b: int
    gx: int
    gy: int
    n: int
    size: int                     # bytes of a coordinate
    crypto: type                  # the cryptography curve class

    @property
    def g(self) -> tuple[int, int]:
        return (self.gx, self.gy)


CURVES: dict[int, Curve] = {
    13: Curve(  # RFC 5639 3.4
        "brainpoolP256r1",
        p=0xA9FB57DBA1EEA9BC3E660A909D838D726E3BF623D52620282013481D1F6E5377,
        a=0x7D5A0975FC2C3057EEF67530417AFFE7FB8055C126DC5C6CE94A4B44F330B5D9,
        b=0x26DC5C6CE94A4B44F330B5D9BBD77CBF958416295CF7E1CE6BCCDC18FF8C07B6,
        gx=0x8BD2AEB9CB7E57CB2C4B482FFC81B7AFB9DE27E1E3BD23C23A4453BD9ACE3262,
        gy=0x547EF835C3DAC4FD97F8461A14611DC9C27745132DED8E545C1D54C72F046997,
        n=0xA9FB57DBA1EEA9BC3E660A909D838D718C397AA3B561A6F7901E0E82974856A7,
        size=32, crypto=ec.BrainpoolP256R1),
    12: Curve(  # SEC 2 2.4.2 (secp256r1 = NIST P-256)
        "NIST P-256",
        p=0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF,
        a=0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFC,
        b=0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
        gx=0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
        gy=0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
        n=0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
        size=32, crypto=ec.SECP256R1),
}

Point = tuple[int, int]


def on_curve(c: Curve, pt: Point) -> bool:
    x, y = pt
    return 0 <= x < c.p and 0 <= y < c.p and (y * y - (x * x * x + c.a * x + c.b)) % c.p == 0


def _jdouble(c: Curve, P: tuple[int, int, int]) -> tuple[int, int, int]:
    X, Y, Z = P
    if Z == 0 or Y == 0:
        return (1, 1, 0)
    p = c.p
    YY = Y * Y % p
    S = 4 * X * YY % p
    ZZ = Z * Z % p
    M = (3 * X * X + c.a * ZZ * ZZ) % p
    X3 = (M * M - 2 * S) % p
    return (X3, (M * (S - X3) - 8 * YY * YY) % p, 2 * Y * Z % p)


def _jadd_affine(c: Curve, P: tuple[int, int, int], Q: Point) -> tuple[int, int, int]:
    X1, Y1, Z1 = P
    if Z1 == 0:
        return (Q[0], Q[1], 1)
    p = c.p
    ZZ = Z1 * Z1 % p
    U2 = Q[0] * ZZ % p
    S2 = Q[1] * ZZ * Z1 % p
    if U2 == X1:
        return _jdouble(c, P) if S2 == Y1 else (1, 1, 0)
    H = (U2 - X1) % p
    R = (S2 - Y1) % p
    HH = H * H % p
    HHH = HH * H % p
    V = X1 * HH % p
    X3 = (R * R - HHH - 2 * V) % p
    return (X3, (R * (V - X3) - Y1 * HHH) % p, Z1 * H % p)


def _to_affine(c: Curve, P: tuple[int, int, int]) -> Point | None:
    X, Y, Z = P
    if Z == 0:
        return None
    zi = pow(Z, -1, c.p)
    zi2 = zi * zi % c.p
    return (X * zi2 % c.p, Y * zi2 * zi % c.p)


def add(c: Curve, P: Point, Q: Point) -> Point | None:
    """P + Q on the curve (None is the point at infinity)."""
    return _to_affine(c, _jadd_affine(c, (P[0], P[1], 1), Q))


def mul(c: Curve, k: int, P: Point) -> Point | None:
    """k * P by double-and-add, at most bit_length(n) rounds (None is the point at infinity)."""
    if not on_curve(c, P):
        raise PaceError(f"a point is not on {c.name}")
    k %= c.n
    R = (1, 1, 0)
    for bit in bin(k)[2:]:
        R = _jdouble(c, R)
        if bit == "1":
            R = _jadd_affine(c, R, P)
    return _to_affine(c, R)


def base_mul(c: Curve, k: int) -> Point:
    """k * G through `cryptography` (k in 1..n-1)."""
    nums = ec.derive_private_key(k, c.crypto()).public_key().public_numbers()
    return (nums.x, nums.y)


def encode_point(c: Curve, pt: Point) -> bytes:
    """Uncompressed X9.62 encoding 04 || x || y."""
    return b"\x04" + pt[0].to_bytes(c.size, "big") + pt[1].to_bytes(c.size, "big")


def decode_point(c: Curve, data: bytes) -> Point:
    """An uncompressed point from the other side, refused unless it is on the curve."""
    if len(data) != 1 + 2 * c.size or data[0] != 0x04:
        raise PaceError(f"a public key is not an uncompressed {c.name} point ({len(data)} bytes)")
    pt = (int.from_bytes(data[1:1 + c.size], "big"), int.from_bytes(data[1 + c.size:], "big"))
    if not on_curve(c, pt):
        raise PaceError(f"a public key is not on {c.name}")
    return pt


def ecdh_x(c: Curve, k: int, pt: Point) -> bytes:
    """x(k * pt), through `cryptography`'s ECDH (which checks the point again)."""
    try:
        peer = ec.EllipticCurvePublicNumbers(pt[0], pt[1], c.crypto()).public_key()
        return ec.derive_private_key(k, c.crypto()).exchange(ec.ECDH(), peer)
    except ValueError as exc:
        raise PaceError(f"key agreement failed: {exc}") from None


def random_scalar(n: int) -> int:
    return secrets.randbelow(n - 1) + 1


def generic_mapping(c: Curve, s: int, h: Point) -> Point:
    """G' = s*G + H (4.4.3.3.1), refused if it is the point at infinity."""
    s %= c.n
    if s == 0:
        raise PaceError("the decrypted nonce is zero modulo the group order")
    mapped = add(c, base_mul(c, s), h)
    if mapped is None:
        raise PaceError("the mapped generator is the point at infinity")
    return mapped


# ---- keys and tokens ---------------------------------------------------------------------------

def kdf(secret: bytes, counter: int, key_len: int) -> bytes:
    """ICAO 9303-11 9.7.1: SHA-1 for AES-128 keys, SHA-256 for AES-192/256, truncated."""
    h = hashlib.sha1 if key_len == 16 else hashlib.sha256
    return h(secret + counter.to_bytes(4, "big")).digest()[:key_len]


def nonce_key(password: bytes, key_len: int) -> bytes:
    """K_pi = KDF(f(pi), 3) (9.7.3); f(pi) is the CAN's digits as ISO 8859-1 bytes."""
    return kdf(password, 3, key_len)


def aes_cbc(key: bytes, data: bytes, *, decrypt: bool) -> bytes:
    """AES-CBC with a zero IV and no padding (the PACE nonce, 4.4.3.1)."""
    cipher = Cipher(algorithms.AES(key), modes.CBC(bytes(16)))
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(data) + op.finalize()


def auth_token(ks_mac: bytes, oid: bytes, point: bytes) -> bytes:
    """T = CMAC(KSmac, 7F49 {06 OID, 86 public point})[:8] (4.4.3.4, 9.4.2 public key data object)."""
    body = tlv(0x06, oid) + tlv(0x86, point)
    c = cmac.CMAC(algorithms.AES(ks_mac))
    c.update(b"\x7F\x49" + _ber_len(len(body)) + body)
    return c.finalize()[:8]


# ---- TLV ---------------------------------------------------------------------------------------

def _ber_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    if n <= 0xFF:
        return bytes([0x81, n])
    return bytes([0x82, n >> 8, n & 0xFF])


def tlv(tag: int, value: bytes) -> bytes:
    """One data object with a one-byte tag."""
    return bytes([tag]) + _ber_len(len(value)) + value


def read_tlvs(data: bytes, max_items: int = 8) -> list[tuple[int, bytes]]:
    """One-byte-tag objects in sequence, each length (short, 81, 82) checked before use."""
    return read_objects(data, max_items=max_items, error=PaceError, what="data object")


def dynamic_auth(inner: bytes) -> bytes:
    """Dynamic authentication data 7C {...} of GENERAL AUTHENTICATE."""
    return tlv(0x7C, inner)


def read_dynamic_auth(data: bytes, max_items: int = 4) -> list[tuple[int, bytes]]:
    """The objects inside a 7C template that must be all of `data`."""
    outer = read_tlvs(data, max_items=1)
    if len(outer) != 1 or outer[0][0] != 0x7C:
        raise PaceError("GENERAL AUTHENTICATE data is not one 7C template")
    return read_tlvs(outer[0][1], max_items=max_items)


# ---- EF.CardAccess -----------------------------------------------------------------------------

@dataclass(frozen=True)
class PaceInfo:
    """One PACEInfo of EF.CardAccess (9303-11 9.2.1)."""
    oid: bytes
    version: int
    param_id: int | None

    @property
    def name(self) -> str:
        if len(self.oid) != 10 or not self.oid.startswith(_ID_PACE):
            return "id-PACE-?"
        kind = _PACE_KINDS.get(self.oid[8], "?")
        cipher = _PACE_CIPHERS.get(self.oid[9], ("?", 0))[0]
        return f"id-PACE-{kind}-{cipher}"

    @property
    def key_len(self) -> int:
        """AES key bytes if this is ECDH-GM with AES, else 0."""
        if len(self.oid) == 10 and self.oid.startswith(_ID_PACE) and self.oid[8] == 2:
            return _PACE_CIPHERS.get(self.oid[9], ("", 0))[1]
        return 0

    @property
    def params(self) -> str:
        if self.param_id is None:
            return "proprietary domain parameters"
        return PARAM_NAMES.get(self.param_id, f"parameter ID {self.param_id}")

    def refusal(self) -> str | None:
        """Why this reader cannot run this PACEInfo, or None if it can."""
        if self.version != 2:
            return f"{self.name} version {self.version} (only version 2 exists)"
        if not self.key_len:
            return f"{self.name} (this reader does ECDH generic mapping with AES only)"
        if self.param_id not in CURVES:
            return (f"{self.name} on {self.params} (this reader does brainpoolP256r1 (13) "
                    "and NIST P-256 (12) only)")
        return None


def _der_items(data: bytes, what: str, max_items: int) -> list[tuple[int, bytes]]:
    try:
        return read_tlvs(data, max_items=max_items)
    except PaceError as exc:
        raise PaceError(f"EF.CardAccess: {what}: {exc}") from None


def _der_uint(value: bytes) -> int:
    if not 1 <= len(value) <= 4 or value[0] & 0x80:
        raise PaceError("EF.CardAccess: an INTEGER is negative, empty or too long")
    return int.from_bytes(value, "big")


def parse_card_access(data: bytes) -> list[PaceInfo]:
    """Every PACEInfo in EF.CardAccess (a SET OF SecurityInfo, 9303-11 9.2); other infos skipped."""
    if not isinstance(data, (bytes, bytearray)):
        raise PaceError("EF.CardAccess is not bytes")
    if len(data) > MAX_CARD_ACCESS:
        raise PaceError(f"EF.CardAccess is {len(data)} bytes (more than {MAX_CARD_ACCESS})")
    top = _der_items(bytes(data), "top level", 1)
    if len(top) != 1 or top[0][0] != 0x31:
        raise PaceError("EF.CardAccess is not one SET OF SecurityInfo")
    infos: list[PaceInfo] = []
    for tag, body in _der_items(top[0][1], "SecurityInfos", MAX_INFOS):
        if tag != 0x30:
            raise PaceError("EF.CardAccess: a SecurityInfo is not a SEQUENCE")
        if len(body) < 2 or body[0] != 0x06:
            raise PaceError("EF.CardAccess: a SecurityInfo does not start with an OID")
        oid_len = body[1]
        if oid_len >= 0x80 or 2 + oid_len > len(body):
            raise PaceError("EF.CardAccess: bad OID length")
        oid = body[2:2 + oid_len]
        if not (oid.startswith(_ID_PACE) and len(oid) == 10):
            continue            # another protocol's info (chip authentication, domain parameters...)
        rest = _der_items(body[2 + oid_len:], "PACEInfo", 2)
        if not rest or any(t != 0x02 for t, _ in rest):
            raise PaceError("EF.CardAccess: a PACEInfo's version or parameterId is not an INTEGER")
        infos.append(PaceInfo(oid, _der_uint(rest[0][1]),
                              _der_uint(rest[1][1]) if len(rest) == 2 else None))
    return infos


def choose(infos: list[PaceInfo]) -> PaceInfo:
    """The first PACEInfo this reader can run, or PaceError naming what the card offers."""
    if not infos:
        raise PaceError("EF.CardAccess lists no PACEInfo: the chip does not offer PACE")
    for info in infos:
        if info.refusal() is None:
            return info
    raise PaceError("unsupported PACE parameters: the card offers " +
                    "; ".join(str(i.refusal()) for i in infos[:4]))


# ---- the terminal ------------------------------------------------------------------------------

def _sw(sw: bytes) -> str:
    return sw.hex().upper()


def _exchange(transport: Transport, apdu: bytes, what: str) -> tuple[bytes, bytes]:
    answer = transport.transmit(apdu)
    if not isinstance(answer, (bytes, bytearray)):
        raise PaceError(f"{what}: the reader gave no bytes")
    if len(answer) < 2 or len(answer) > MAX_ANSWER:
        raise PaceError(f"{what}: an answer of {len(answer)} bytes")
    return bytes(answer[:-2]), bytes(answer[-2:])


def _general_authenticate(transport: Transport, step: int, inner: bytes, want: int,
                          extra_ok: tuple[int, ...] = ()) -> bytes:
    """One GENERAL AUTHENTICATE (CLA 10 = chained for steps 1-3); the value of DO `want`."""
    body = dynamic_auth(inner)
    apdu = bytes([0x10 if step < 4 else 0x00, 0x86, 0x00, 0x00, len(body)]) + body + b"\x00"
    what = f"PACE step {step}"
    data, sw = _exchange(transport, apdu, what)
    if sw != b"\x90\x00":
        if step == 4 and sw[0] == 0x63:
            raise PaceError(f"the card refused the terminal's token: wrong CAN (SW {_sw(sw)})")
        raise PaceError(f"{what}: the card answered SW {_sw(sw)}")
    objects = read_dynamic_auth(data, max_items=1 + len(extra_ok))
    if not objects or objects[0][0] != want:
        raise PaceError(f"{what}: the answer has no DO {want:02X}")
    for tag, _ in objects[1:]:
        if tag not in extra_ok:
            raise PaceError(f"{what}: unexpected DO {tag:02X} in the answer")
    return objects[0][1]


def pace(transport: Transport, can: str, card_access: bytes) -> AesSM:
    """Run PACE with the CAN; returns the AES secure messaging of the session.

    `card_access` is EF.CardAccess (FID 011C, read before selecting the applet). Raises
    PaceError on a wrong CAN, unsupported parameters or a malformed answer."""
    if not isinstance(can, str) or len(can) != 6 or not (can.isascii() and can.isdigit()):
        raise PaceError("the CAN must be 6 digits (the last 6 of the CCCD's 12-digit ID)")
    return pace_with_password(transport, can.encode("ascii"), PW_CAN, card_access)


def pace_with_password(transport: Transport, password: bytes, pw_ref: int, card_access: bytes,
                       *, keygen: Callable[[int], int] | None = None) -> AesSM:
    """PACE with any password: f(pi) as bytes and its reference (01 MRZ, 02 CAN). `keygen(n)` gives
    each ephemeral private key (for reproducing a published worked example); random by default."""
    keygen = keygen or random_scalar
    infos = parse_card_access(card_access)
    info = choose(infos)
    c = CURVES[info.param_id]            # choose() only returns supported parameter IDs
    key_len = info.key_len

    # MSE:Set AT (4.4.4.1): protocol, password, the parameter ID when there is a choice
    body = tlv(0x80, info.oid) + tlv(0x83, bytes([pw_ref]))
    if len(infos) > 1:
        body += tlv(0x84, bytes([info.param_id]))
    _, sw = _exchange(transport, b"\x00\x22\xC1\xA4" + bytes([len(body)]) + body, "MSE:Set AT")
    if sw != b"\x90\x00":
        raise PaceError(f"the card refused PACE {info.name} on {info.params} (MSE:Set AT SW {_sw(sw)})")

    # 1. the enciphered nonce
    z = _general_authenticate(transport, 1, b"", 0x80)
    if not z or len(z) % 16 or len(z) > 32:
        raise PaceError(f"PACE step 1: an enciphered nonce of {len(z)} bytes")
    s = int.from_bytes(aes_cbc(nonce_key(password, key_len), z, decrypt=True), "big")

    # 2. generic mapping
    sk_map = keygen(c.n)
    pk_map = base_mul(c, sk_map)
    raw = _general_authenticate(transport, 2, tlv(0x81, encode_point(c, pk_map)), 0x82)
    pk_map_ic = decode_point(c, raw)
    if pk_map_ic == pk_map:
        raise PaceError("PACE step 2: the card echoed the terminal's mapping key")
    h = mul(c, sk_map, pk_map_ic)
    if h is None:
        raise PaceError("PACE step 2: the shared point is the point at infinity")
    g_mapped = generic_mapping(c, s, h)

    # 3. key agreement on the mapped generator
    sk_dh = keygen(c.n)
    pk_dh = mul(c, sk_dh, g_mapped)
    if pk_dh is None:
        raise PaceError("PACE step 3: the ephemeral key is the point at infinity")
    pk_dh_bytes = encode_point(c, pk_dh)
    raw = _general_authenticate(transport, 3, tlv(0x83, pk_dh_bytes), 0x84)
    pk_dh_ic = decode_point(c, raw)
    if pk_dh_ic == pk_dh:
        raise PaceError("PACE step 3: the card echoed the terminal's ephemeral key")
    shared = ecdh_x(c, sk_dh, pk_dh_ic)
    ks_enc, ks_mac = kdf(shared, 1, key_len), kdf(shared, 2, key_len)

    # 4. mutual authentication (87/88: certification authority references of EAC, 8A: CAM data)
    t_ifd = auth_token(ks_mac, info.oid, encode_point(c, pk_dh_ic))
    t_ic = _general_authenticate(transport, 4, tlv(0x85, t_ifd), 0x86, extra_ok=(0x87, 0x88, 0x8A))
    if not hmac.compare_digest(t_ic, auth_token(ks_mac, info.oid, pk_dh_bytes)):
        raise PaceError("PACE step 4: the card's authentication token is wrong")
    return AesSM(ks_enc, ks_mac, 0)
