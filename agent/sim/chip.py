"""A simulated CCCD chip for tests and benchmarks: the files of a Vietnamese chip ID (TD1 MRZ in
the CCCD's layout, a DG13 as public readers parse it, a small DG2, DG15 with an active
authentication key, an EF.SOD signed by a Document Signer under a test CSCA made at test time)
behind the APDUs a card answers: SELECT, READ BINARY (short and extended), GET CHALLENGE,
EXTERNAL AUTHENTICATE (BAC; refused keys -> 6300), INTERNAL AUTHENTICATE, chip authentication
(a static ECDH key on brainpoolP256r1 in DG14; MSE:Set KAT for 3DES, MSE:Set AT + GENERAL
AUTHENTICATE for AES, then secure messaging under the agreed keys, 9303-11 6.2), secure messaging
(a bad MAC -> 6988 and the session ends), 6982 for a file read without a session. It can be
lifted from the field after N commands, answer slowly, and lie (`Corrupt`)."""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import os
import random
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from agent.chip import files
from agent.chip import ca as chip_ca
from agent.chip.bac import check_digit, derive_key, kseed, mrz_info
from agent.chip.sm import DesSM, SMBase, SMError, des3_decrypt, des3_encrypt, retail_mac, split_apdu
from agent.chip.pace import read_dynamic_auth, read_tlvs
from agent.chip.tlv import encode as T, encode_oid
from agent.chip.transport import CardLost

OK = b"\x90\x00"
TINY_JPEG = bytes.fromhex(  # a 1x1 grey baseline JPEG
    "ffd8ffe000104a46494600010100000100010000ffdb004300080606070605080707070909080a0c140d0c0b0b0c"
    "1912130f141d1a1f1e1d1a1c1c20242e2720222c231c1c2837292c30313434341f27393d38323c2e333432ffc0"
    "000b080001000101011100ffc4001f0000010501010101010100000000000000000102030405060708090a0bff"
    "c400b5100002010303020403050504040000017d01020300041105122131410613516107227114328191a10823"
    "42b1c11552d1f02433627282090a161718191a25262728292a3435363738393a434445464748494a5354555657"
    "58595a636465666768696a737475767778797a838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aa"
    "b2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8"
    "f9faffda0008010100003f00fbd0ffd9")


@dataclass
class SimCard:
    id_number: str = "001089012345"
    name: str = "Nguyễn Văn An"
    birth_date: dt.date = dt.date(1989, 3, 14)
    sex: str = "Nam"
    nationality: str = "Việt Nam"
    ethnicity: str = "Kinh"
    religion: str = "Không"
    home_town: str = "Xã Tân Lập, Huyện Đan Phượng, Hà Nội"
    residence: str = "Số 12 Phố Huế, Phường Phạm Đình Hổ, Hai Bà Trưng, Hà Nội"
    marks: str = "Nốt ruồi cách 2cm trên đầu lông mày trái"
    issued: dt.date = dt.date(2021, 7, 1)
    expiry: dt.date | None = dt.date(2029, 3, 14)
    parents: tuple[str, str] = ("Nguyễn Văn Bình", "Trần Thị Cúc")
    spouse: str | None = None
    old_id: str | None = "012345678"
    face_jpeg: bytes = TINY_JPEG

    @property
    def expiry_yymmdd(self) -> str:
        return self.expiry.strftime("%y%m%d") if self.expiry else "991231"

    @property
    def birth_yymmdd(self) -> str:
        return self.birth_date.strftime("%y%m%d")


@dataclass
class TestPki:
    csca_key: object
    csca_cert: x509.Certificate
    ds_key: object
    ds_cert: x509.Certificate
    csca_dir: Path            # holds csca.pem: the trust store to pass as csca_dir


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(folder: Path, *, ds_expired: bool = False, ds_rsa: bool = False,
             cn: str = "Test CSCA Viet Nam") -> TestPki:
    """A CSCA (self-signed) and a Document Signer it issues, made now with `cryptography`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    csca_key = ec.generate_private_key(ec.SECP256R1())
    csca = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(csca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=3650)).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(csca_key, hashes.SHA256()))
    ds_key = rsa.generate_private_key(65537, 2048) if ds_rsa else ec.generate_private_key(ec.SECP256R1())
    start, end = ((now - dt.timedelta(days=800), now - dt.timedelta(days=1)) if ds_expired
                  else (now - dt.timedelta(days=30), now + dt.timedelta(days=3650)))
    ds = (x509.CertificateBuilder().subject_name(_name("Test Document Signer"))
          .issuer_name(csca.subject).public_key(ds_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
          .sign(csca_key, hashes.SHA256()))
    (folder / "csca.pem").write_bytes(csca.public_bytes(serialization.Encoding.PEM))
    return TestPki(csca_key, csca, ds_key, ds, folder)


@dataclass
class Corrupt:
    """Ways the simulated chip lies."""

    files: dict[int, bytes] = field(default_factory=dict)   # FID -> content served (SOD unchanged)
    bad_signature: bool = False                              # one bit of the SOD signature flipped
    aa_wrong_key: bool = False                               # AA signs with a key DG15 does not hold
    ca_wrong_key: bool = False                               # CA with a key DG14 does not hold
    response: Callable[[bytes, bytes], bytes] | None = None  # (command, answer) -> answer sent


def damage(rng: random.Random, data: bytes, max_ops: int = 3) -> bytes:
    """`data` damaged 1 to `max_ops` times, the way a hostile or failing chip's answers are: a
    byte changed, a length byte set to one that misleads a TLV parser, a run cut out or put in,
    the end cut, garbage appended. The fuzzers' one mutator (bench/chip.py, tests/test_chip_fuzz.py)."""
    b = bytearray(data)
    for _ in range(rng.randint(1, max_ops)):
        op = rng.randrange(6)
        i = rng.randrange(len(b)) if b else 0
        if op == 0 and b:
            b[i] = rng.randrange(256)                        # any byte
        elif op == 1 and b:
            b[i] = rng.choice([0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0xFF, 0x00, 0x7F])   # lengths
        elif op == 2:
            del b[i:i + rng.randint(1, 16)]                  # a run cut out
        elif op == 3:
            b[i:i] = rng.randbytes(rng.randint(1, 16))       # a run put in
        elif op == 4:
            b = b[:rng.randrange(len(b) + 1)]                # the end cut
        else:
            b += rng.randbytes(rng.randint(1, 8))            # trailing garbage
    return bytes(b)


def _mrz_name(name: str) -> str:
    plain = unicodedata.normalize("NFKD", name.replace("Đ", "D").replace("đ", "d"))
    words = "".join(c for c in plain if c.isascii()).upper().split()
    return (words[0] + "<<" + "<".join(words[1:]))[:30].ljust(30, "<") if words else "<" * 30


def dg1_bytes(card: SimCard) -> bytes:
    doc = card.id_number[-9:]
    l1 = ("IDVNM" + doc + check_digit(doc) + card.id_number).ljust(30, "<")
    sex = {"Nam": "M", "Nữ": "F"}.get(card.sex, "<")
    l2 = card.birth_yymmdd + check_digit(card.birth_yymmdd) + sex
    l2 += card.expiry_yymmdd + check_digit(card.expiry_yymmdd) + "VNM" + "<" * 11
    composite = l1[5:30] + l2[0:7] + l2[8:15] + l2[18:29]
    l2 += check_digit(composite)
    return T(0x61, T(0x5F1F, (l1 + l2 + _mrz_name(card.name)).encode()))


def dg13_bytes(card: SimCard) -> bytes:
    def f(n: int, value: bytes) -> bytes:
        return T(0x30, T(0x02, bytes([n])) + value)

    def u(s: str) -> bytes:
        return T(0x0C, s.encode("utf-8"))

    expiry = card.expiry.strftime("%d/%m/%Y") if card.expiry else "Không thời hạn"
    texts = [card.id_number, card.name, card.birth_date.strftime("%d/%m/%Y"), card.sex,
             card.nationality, card.ethnicity, card.religion, card.home_town, card.residence,
             card.marks, card.issued.strftime("%d/%m/%Y"), expiry]
    body = b"".join(f(i + 1, u(s)) for i, s in enumerate(texts))
    body += f(13, T(0x30, u(card.parents[0]) + u(card.parents[1])))
    if card.spouse:
        body += f(14, T(0x30, u(card.spouse)))
    if card.old_id:
        body += f(15, u(card.old_id))
    content = T(0x02, b"\x01") + encode_oid("1.0.10646.1.0.8") + T(0x31, body)
    return T(0x6D, T(0x30, content))


def dg2_bytes(card: SimCard) -> bytes:
    record = b"FAC\x00010\x00" + len(card.face_jpeg).to_bytes(4, "big") + b"\x00\x01" + card.face_jpeg
    header = T(0xA1, T(0x80, b"\x01\x01") + T(0x87, b"\x01\x01"))
    return T(0x75, T(0x7F61, T(0x02, b"\x01") + T(0x7F60, header + T(0x5F2E, record))))


def _der_uint(n: int) -> bytes:
    b = n.to_bytes(n.bit_length() // 8 + 1, "big")
    return T(0x02, b)


def sod_bytes(groups: dict[int, bytes], pki: TestPki, bad_signature: bool = False) -> bytes:
    sha256 = T(0x30, encode_oid("2.16.840.1.101.3.4.2.1") + T(0x05, b""))
    lds_oid = encode_oid("2.23.136.1.1.1")
    hashes_ = b"".join(T(0x30, T(0x02, bytes([n])) + T(0x04, hashlib.sha256(d).digest()))
                       for n, d in sorted(groups.items()))
    econtent = T(0x30, T(0x02, b"\x00") + sha256 + T(0x30, hashes_))
    attrs = (T(0x30, encode_oid("1.2.840.113549.1.9.3") + T(0x31, lds_oid))
             + T(0x30, encode_oid("1.2.840.113549.1.9.4") + T(0x31, T(0x04, hashlib.sha256(econtent).digest()))))
    key = pki.ds_key
    if isinstance(key, rsa.RSAPrivateKey):
        from cryptography.hazmat.primitives.asymmetric import padding
        sig = key.sign(T(0x31, attrs), padding.PKCS1v15(), hashes.SHA256())
        sig_alg = T(0x30, encode_oid("1.2.840.113549.1.1.11") + T(0x05, b""))
    else:
        sig = key.sign(T(0x31, attrs), ec.ECDSA(hashes.SHA256()))
        sig_alg = T(0x30, encode_oid("1.2.840.10045.4.3.2"))
    if bad_signature:
        sig = sig[:-3] + bytes([sig[-3] ^ 0x01]) + sig[-2:]
    cert = pki.ds_cert.public_bytes(serialization.Encoding.DER)
    sid = T(0x30, pki.ds_cert.issuer.public_bytes() + _der_uint(pki.ds_cert.serial_number))
    signer = T(0x30, T(0x02, b"\x01") + sid + sha256 + T(0xA0, attrs) + sig_alg + T(0x04, sig))
    signed = T(0x30, T(0x02, b"\x03") + T(0x31, sha256) + T(0x30, lds_oid + T(0xA0, T(0x04, econtent)))
               + T(0xA0, cert) + T(0x31, signer))
    return T(0x77, T(0x30, encode_oid("1.2.840.113549.1.7.2") + T(0xA0, signed)))


def ca_security_infos(key: ec.EllipticCurvePublicKey, cipher: str = "aes128", key_id: int | None = None) -> list[bytes]:
    """ChipAuthenticationInfo and ChipAuthenticationPublicKeyInfo (9303-11 9.2) for DG14."""
    kid = T(0x02, bytes([key_id])) if key_id is not None else b""
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return [T(0x30, encode_oid(chip_ca.CA_OIDS[cipher]) + T(0x02, b"\x01") + kid),
            T(0x30, encode_oid("0.4.0.127.0.7.2.2.1.2") + spki + kid)]


def _iso9796_sign(key: rsa.RSAPrivateKey, challenge: bytes) -> bytes:
    """ISO/IEC 9796-2 scheme 1, SHA-1, trailer BC, partial recovery (9303-11 6.1)."""
    n, d = key.public_key().public_numbers().n, key.private_numbers().d
    k = (n.bit_length() + 7) // 8
    m1 = os.urandom(k - 22)
    f = b"\x6a" + m1 + hashlib.sha1(m1 + challenge).digest() + b"\xbc"
    return pow(int.from_bytes(f, "big"), d, n).to_bytes(k, "big")


class SimChip:
    """The card; `transmit` is the Transport protocol."""

    def __init__(self, card: SimCard, pki: TestPki, *, bac: bool = True, pace: bool = True,
                 aa: bool | str = True, ca: bool | str = True, lift_after: int | None = None,
                 corrupt: Corrupt | None = None, latency: float | None = None):
        self.card, self.bac_on = card, bac
        self.lift_after, self.latency = lift_after, latency
        self.corrupt = corrupt or Corrupt()
        self.apdus = 0
        self.sm: SMBase | None = None
        self.selected: int | None = None
        self.applet = False
        self.rnd_ic: bytes | None = None
        self.aa_key = None
        groups = {1: dg1_bytes(card), 2: dg2_bytes(card), 13: dg13_bytes(card)}
        security_infos: list[bytes] = []
        self.ca_key = None
        self.ca_sm: SMBase | None = None          # the session CA agreed, started after its answer
        self.ca_cipher: str | None = None         # the cipher MSE:Set AT chose for GENERAL AUTHENTICATE
        if ca:
            # ca=True: id-CA-ECDH-AES-CBC-CMAC-128; ca="3des": id-CA-ECDH-3DES-CBC-CBC
            self.ca_key = ec.generate_private_key(ec.BrainpoolP256R1())
            security_infos += ca_security_infos(self.ca_key.public_key(), "3des" if ca == "3des" else "aes128")
            if self.corrupt.ca_wrong_key:
                self.ca_key = ec.generate_private_key(ec.BrainpoolP256R1())
        if aa:
            if aa == "ec":
                self.aa_key = ec.generate_private_key(ec.SECP256R1())
                security_infos.append(T(0x30, encode_oid("2.23.136.1.1.5") + T(0x02, b"\x01")
                                        + encode_oid("1.2.840.10045.4.3.2")))
            else:
                self.aa_key = rsa.generate_private_key(65537, 1024)
            spki = self.aa_key.public_key().public_bytes(serialization.Encoding.DER,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo)
            groups[15] = T(0x6F, spki)
        if security_infos:
            groups[14] = T(0x6E, T(0x31, b"".join(security_infos)))
        tags = {1: 0x61, 2: 0x75, 13: 0x6D, 14: 0x6E, 15: 0x6F}
        self.files: dict[int, bytes] = {files.DG_FID[n]: d for n, d in groups.items()}
        self.files[files.FID_COM] = T(0x60, T(0x5F01, b"0107") + T(0x5F36, b"040000")
                                      + T(0x5C, bytes(tags[n] for n in sorted(groups))))
        self.files[files.FID_SOD] = sod_bytes(groups, pki, self.corrupt.bad_signature)
        self.files.update(self.corrupt.files)
        self.pace_card = None
        self.chip_pace = None
        if pace:
            try:
                self.chip_pace = importlib.import_module("agent.sim.chip_pace")
            except ImportError:
                self.chip_pace = None
        if self.chip_pace is not None:
            self.files[files.FID_CARD_ACCESS] = self.chip_pace.card_access_bytes()
        if self.corrupt.aa_wrong_key and self.aa_key is not None:
            self.aa_key = (ec.generate_private_key(ec.SECP256R1()) if aa == "ec"
                           else rsa.generate_private_key(65537, 1024))
        seed = kseed(mrz_info(card.id_number[-9:], card.birth_yymmdd, card.expiry_yymmdd))
        self.k_enc, self.k_mac = derive_key(seed, 1), derive_key(seed, 2)

    # the Transport protocol
    def transmit(self, apdu: bytes) -> bytes:
        self.apdus += 1
        if self.lift_after is not None and self.apdus > self.lift_after:
            raise CardLost("the card left the field")
        if self.latency:
            time.sleep(self.latency)
        resp = self._answer(bytes(apdu))
        if self.corrupt.response:
            resp = self.corrupt.response(bytes(apdu), resp)
        return resp

    def _answer(self, apdu: bytes) -> bytes:
        try:
            h, data, le, _ = split_apdu(apdu)
        except Exception:
            return b"\x67\x00"
        if h[0] & 0x0C and self.sm is not None:
            try:
                h, data, le = self.sm.unwrap_command(apdu)
            except (SMError, IndexError, ValueError):
                self.sm = None
                return b"\x69\x88"
            out, sw = self._handle(h, data, le, True)
            resp = self.sm.wrap_response(out, sw) if self.sm is not None else sw
            if self.ca_sm is not None:            # CA's answer went under the old keys
                self.sm, self.ca_sm = self.ca_sm, None
            return resp
        if self.sm is not None and h[1] not in (0x22, 0x86):
            self.sm = None                  # a plain command ends the session (9303-11 9.8)
        out, sw = self._handle(h, data, le, False)
        return out + sw

    def _handle(self, h: bytes, data: bytes, le: int | None, protected: bool) -> tuple[bytes, bytes]:
        ins, p1, p2 = h[1], h[2], h[3]
        if ins == 0xA4:
            if p1 == 0x04:
                if data != files.APPLET_AID:
                    return b"", b"\x6a\x82"
                self.applet, self.selected = True, None
                return b"", OK
            fid = int.from_bytes(data, "big") if len(data) == 2 else -1
            if fid not in self.files or (fid != files.FID_CARD_ACCESS and not self.applet):
                return b"", b"\x6a\x82"
            if fid != files.FID_CARD_ACCESS and not protected:
                return b"", b"\x69\x82"
            self.selected = fid
            return b"", OK
        if ins == 0xB0:
            if self.selected is None:
                return b"", b"\x69\x86"
            if self.selected != files.FID_CARD_ACCESS and not protected:
                return b"", b"\x69\x82"
            if p1 & 0x80:
                return b"", b"\x6a\x81"
            content = self.files[self.selected]
            off = (p1 << 8) | p2
            if off > len(content):
                return b"", b"\x6b\x00"
            part = content[off:off + (le or 256)]
            return part, OK if len(part) == (le or 256) else b"\x62\x82"
        if ins == 0x84:
            if not self.bac_on:
                return b"", b"\x6d\x00"
            self.rnd_ic = os.urandom(8)
            return self.rnd_ic, OK
        if ins == 0x82:
            return self._external_authenticate(data)
        if ins == 0x88:
            if not protected or self.aa_key is None:
                return b"", b"\x69\x82" if not protected else b"\x6d\x00"
            if isinstance(self.aa_key, rsa.RSAPrivateKey):
                return _iso9796_sign(self.aa_key, data), OK
            r, s = decode_dss_signature(self.aa_key.sign(data, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big"), OK
        if ins in (0x22, 0x86) and protected:
            return self._chip_authenticate(ins, p1, p2, data)
        if ins in (0x22, 0x86) and self.chip_pace is not None:
            if self.pace_card is None:
                self.pace_card = self.chip_pace.PaceCard(self.card.id_number[-6:],
                                                         self.chip_pace.card_access_bytes())
            resp, sm = self.pace_card.handle(h + (bytes([len(data)]) + data if data else b"")
                                             + (b"\x00" if le else b""))
            if sm is not None:
                self.sm, self.pace_card = sm, None
            return resp[:-2], resp[-2:]
        return b"", b"\x6d\x00"

    def _chip_authenticate(self, ins: int, p1: int, p2: int, data: bytes) -> tuple[bytes, bytes]:
        """9303-11 6.2 on the card: MSE:Set KAT (41 A6, 91 key) agrees at once (3DES); MSE:Set AT
        (41 A4, 80 OID) picks the cipher and GENERAL AUTHENTICATE (7C { 80 key }) agrees."""
        if self.ca_key is None:
            return b"", b"\x6d\x00"
        try:
            objs = dict(read_dynamic_auth(data) if ins == 0x86 else read_tlvs(data))
        except ValueError:
            return b"", b"\x6a\x80"
        if ins == 0x22 and (p1, p2) == (0x41, 0xA4):
            oid = objs.get(0x80, b"")
            self.ca_cipher = {encode_oid(o)[2:]: c for c, o in chip_ca.CA_OIDS.items()}.get(oid)
            return b"", OK if self.ca_cipher else b"\x6a\x80"
        if ins == 0x22 and (p1, p2) == (0x41, 0xA6):
            cipher, key = "3des", objs.get(0x91)
        elif ins == 0x86 and self.ca_cipher:
            cipher, key = self.ca_cipher, objs.get(0x80)
        else:
            return b"", b"\x69\x85"
        self.ca_cipher = None
        try:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(self.ca_key.curve, key or b"")
            shared = self.ca_key.exchange(ec.ECDH(), peer)
        except ValueError:
            return b"", b"\x6a\x80"
        self.ca_sm = chip_ca.session_keys(shared, cipher)
        return (b"\x7c\x00" if ins == 0x86 else b""), OK

    def _external_authenticate(self, data: bytes) -> tuple[bytes, bytes]:
        rnd_ic, self.rnd_ic = self.rnd_ic, None
        if rnd_ic is None or len(data) != 40:
            return b"", b"\x69\x85"
        if retail_mac(self.k_mac, data[:32]) != data[32:]:
            return b"", b"\x63\x00"
        s = des3_decrypt(self.k_enc, data[:32])
        rnd_ifd, echoed, k_ifd = s[:8], s[8:16], s[16:]
        if echoed != rnd_ic:
            return b"", b"\x63\x00"
        k_ic = os.urandom(16)
        e_ic = des3_encrypt(self.k_enc, rnd_ic + rnd_ifd + k_ic)
        seed = bytes(a ^ b for a, b in zip(k_ifd, k_ic))
        self.sm = DesSM(derive_key(seed, 1), derive_key(seed, 2), rnd_ic[4:] + rnd_ifd[4:])
        return e_ic + retail_mac(self.k_mac, e_ic), OK
