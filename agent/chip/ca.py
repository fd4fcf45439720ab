"""Chip authentication, version 1 (ICAO Doc 9303-11 section 6.2): the terminal agrees a key with
the chip's static key of DG14 (which EF.SOD signs) from a fresh ephemeral key pair, and the
session goes on under secure messaging keyed by that agreement. Only a chip holding DG14's private
key can answer the next protected command, so a copy of the data without the key fails there; the
chip signs nothing (no challenge semantics as in active authentication, 6.1), which is why 9303
ranks CA above AA.

Implemented: ECDH on the curves agent/chip/pace.py knows (brainpoolP256r1, NIST P-256; named or
explicit domain parameters), with 3DES (MSE:Set KAT: 00 22 41 A6, 91 ephemeral key) or AES
(MSE:Set AT 00 22 41 A4 with the protocol OID, then GENERAL AUTHENTICATE 7C { 80 ephemeral key }),
both sent under the access session (9303-11 6.2). Keys: KSenc = KDF(K, 1), KSmac = KDF(K, 2) with
K the x-coordinate of the shared point (the KDF of 9303-11 9.7.1), secure messaging (9.8) with
SSC 0. The protocol and the key come from DG14's SecurityInfos (9303-11 9.2; parsed in
lds.parse_dg14_ca). DH chip authentication is not implemented (said so, never a pass)."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.chip import files
from agent.chip.bac import derive_key
from agent.chip.lds import CaInfo
from agent.chip.pace import CURVES, PaceError, decode_point, tlv
from agent.chip.sm import DesSM, SecureMessaging
from agent.chip.sm_aes import AesSM
from agent.chip.tlv import encode_oid
from agent.chip.transport import ChipError, Transport

CA_OIDS = {"3des": "0.4.0.127.0.7.2.2.3.2.1", "aes128": "0.4.0.127.0.7.2.2.3.2.2",
           "aes192": "0.4.0.127.0.7.2.2.3.2.3", "aes256": "0.4.0.127.0.7.2.2.3.2.4"}


class Unsupported(ChipError):
    """DG14 offers a chip authentication this terminal does not run (DH, an unknown curve)."""


def session_keys(shared_x: bytes, cipher: str) -> SecureMessaging:
    """The secure messaging that follows CA: KDF(K, 1), KDF(K, 2), SSC 0 (9303-11 6.2, 9.7.1)."""
    enc, mac = derive_key(shared_x, 1, cipher), derive_key(shared_x, 2, cipher)
    return DesSM(enc, mac, 0) if cipher == "3des" else AesSM(enc, mac, 0)


def _key_ref(info: CaInfo) -> bytes:
    if info.key_id is None:
        return b""
    if not 0 <= info.key_id < 1 << 32:
        raise ChipError(f"DG14 keyId {info.key_id} out of range")
    n = max(1, (info.key_id.bit_length() + 7) // 8)
    return tlv(0x84, info.key_id.to_bytes(n, "big"))


def _apdu(header: bytes, data: bytes, le: bool = False) -> bytes:
    if len(data) > 255:
        raise ChipError("chip authentication command too long")
    return header + bytes([len(data)]) + data + (b"\x00" if le else b"")


def chip_auth(transport: Transport, sm: SecureMessaging, info: CaInfo) -> tuple[SecureMessaging, bool, str]:
    """(the new session, passed, reason). Runs CA with DG14's key, restarts secure messaging and
    proves it with one protected SELECT + READ BINARY of EF.COM: a chip without the private key
    cannot answer it. CardLost passes through; every other failure is (sm, False, why)."""
    if info.agreement != "ECDH":
        raise Unsupported(f"chip authentication with {info.agreement} is not implemented")
    if info.curve not in CURVES:
        raise Unsupported("chip authentication on domain parameters this terminal does not know")
    curve = CURVES[info.curve]
    try:
        x, y = decode_point(curve, info.point)
        chip_key = ec.EllipticCurvePublicNumbers(x, y, curve.crypto()).public_key()
    except (PaceError, ValueError) as e:
        return sm, False, f"DG14 chip authentication key unusable: {str(e)[:80]}"
    eph = ec.generate_private_key(curve.crypto())
    eph_pub = eph.public_key().public_bytes(serialization.Encoding.X962,
                                            serialization.PublicFormat.UncompressedPoint)
    shared = eph.exchange(ec.ECDH(), chip_key)
    ref = _key_ref(info)
    try:
        if info.cipher == "3des":
            _, sw = files.send(transport, sm, _apdu(b"\x00\x22\x41\xa6", tlv(0x91, eph_pub) + ref))
            what = "MSE:Set KAT"
        else:
            _, sw = files.send(transport, sm, _apdu(b"\x00\x22\x41\xa4",
                                                    tlv(0x80, encode_oid(CA_OIDS[info.cipher])[2:]) + ref))
            if sw != b"\x90\x00":
                return sm, False, f"chip authentication: MSE:Set AT answered {sw.hex().upper()}"
            data, sw = files.send(transport, sm, _apdu(b"\x00\x86\x00\x00",
                                                       tlv(0x7C, tlv(0x80, eph_pub)), le=True))
            what = "GENERAL AUTHENTICATE"
            if sw == b"\x90\x00" and data[:1] != b"\x7c":
                return sm, False, "chip authentication: GENERAL AUTHENTICATE answer is not 7C"
    except ChipError as e:
        return sm, False, f"chip authentication failed: {str(e)[:100]}"
    if sw != b"\x90\x00":
        return sm, False, f"chip authentication: {what} answered {sw.hex().upper()}"
    new = session_keys(shared, info.cipher)
    try:
        files.select_ef(transport, new, files.FID_COM)
        files.read_binary(transport, new, 0, 4)
    except (ChipError, ValueError) as e:
        return new, False, ("the chip cannot answer under the chip authentication keys (a cloned "
                            f"chip?): {str(e)[:80]}")
    return new, True, ""
