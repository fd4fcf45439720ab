"""Active authentication (ICAO Doc 9303-11 section 6.1): the chip signs a fresh challenge with
the private key matching DG15's public key, which the SOD covers; a copied chip has the data but
not the key. RSA answers are ISO/IEC 9796-2 digital signature scheme 1 (message recovery),
ECDSA answers are plain r||s (BSI TR-03111) with the hash DG14 names."""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from agent.chip.files import send
from agent.chip.sm import SecureMessaging
from agent.chip.transport import ChipError, Transport

# ISO/IEC 9796-2 trailers: BC (implicit SHA-1), or the hash's identifier then CC
_TRAILER_HASH = {0x33: "sha1", 0x38: "sha224", 0x34: "sha256", 0x36: "sha384", 0x35: "sha512"}
_EC_HASH = {"sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256,
            "sha384": hashes.SHA384, "sha512": hashes.SHA512}


def verify_rsa(key: rsa.RSAPublicKey, challenge: bytes, signature: bytes) -> bool:
    n, e = key.public_numbers().n, key.public_numbers().e
    k = (n.bit_length() + 7) // 8
    s = int.from_bytes(signature, "big")
    if len(signature) != k or not 0 < s < n:
        return False
    f = pow(s, e, n).to_bytes(k, "big")
    if f[-1] == 0xBC:
        name, t = "sha1", 1
    elif f[-1] == 0xCC and f[-2] in _TRAILER_HASH:
        name, t = _TRAILER_HASH[f[-2]], 2
    else:
        return False
    hlen = hashlib.new(name).digest_size
    if f[0] & 0xC0 != 0x40 or len(f) < 1 + hlen + t:
        return False
    m1, digest = f[1:-(hlen + t)], f[-(hlen + t):-t]
    return hmac.compare_digest(digest, hashlib.new(name, m1 + challenge).digest())


def verify_ec(key: ec.EllipticCurvePublicKey, challenge: bytes, signature: bytes,
              hash_name: str | None) -> bool:
    if len(signature) % 2 or not signature:
        return False
    half = len(signature) // 2
    der = encode_dss_signature(int.from_bytes(signature[:half], "big"),
                               int.from_bytes(signature[half:], "big"))
    size = key.curve.key_size
    name = hash_name or ("sha512" if size > 384 else "sha384" if size > 256 else "sha256"
                         if size > 224 else "sha224")
    try:
        key.verify(der, challenge, ec.ECDSA(_EC_HASH[name]()))
        return True
    except InvalidSignature:
        return False


def active_auth(transport: Transport, sm: SecureMessaging | None, dg15_key: bytes,
                ec_hash: str | None = None, challenge: bytes | None = None) -> tuple[bool, str]:
    """(passed, reason) of INTERNAL AUTHENTICATE with a random 8-byte challenge.
    CardLost passes through; every other failure is (False, why)."""
    try:
        key = serialization.load_der_public_key(dg15_key)
    except (ValueError, TypeError) as e:
        return False, f"DG15 key unreadable: {str(e)[:60]}"
    challenge = challenge or os.urandom(8)
    try:
        sig, sw = send(transport, sm, b"\x00\x88\x00\x00\x08" + challenge + b"\x00")
    except ChipError as e:
        return False, f"INTERNAL AUTHENTICATE failed: {e}"
    if sw != b"\x90\x00":
        return False, f"INTERNAL AUTHENTICATE answered {sw.hex().upper()}"
    if isinstance(key, rsa.RSAPublicKey):
        ok = verify_rsa(key, challenge, sig)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        ok = verify_ec(key, challenge, sig, ec_hash)
    else:
        return False, f"DG15 key type {type(key).__name__} not supported"
    return ok, "" if ok else "active authentication signature does not verify (a cloned chip?)"
