"""Passive authentication (ICAO Doc 9303-11 section 5.1): the data read from the chip is what
the issuer signed. Two levels:
- "signature": every data group read hashes to the value in EF.SOD, and EF.SOD's signature
  verifies with the Document Signer (DS) certificate it carries, valid today. Always checked.
- "chain": in addition the DS certificate is issued by a CSCA certificate from `csca_dir`, the
  trust store IT installs (PEM or DER files). Without one the chain is "not checked".
Anything else is "failed", with the reason. A forged chip can carry its own DS certificate, so
only "chain" says the issuer is Vietnam's; "signature" says the data is consistent."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from agent.chip import lds
from agent.chip.transport import ChipError

MAX_CSCA_FILES = 500
MAX_CSCA_BYTES = 64 * 1024

_HASH = {"sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256,
         "sha384": hashes.SHA384, "sha512": hashes.SHA512}
_RSA_PKCS1 = {"1.2.840.113549.1.1.5": "sha1", "1.2.840.113549.1.1.14": "sha224",
              "1.2.840.113549.1.1.11": "sha256", "1.2.840.113549.1.1.12": "sha384",
              "1.2.840.113549.1.1.13": "sha512"}
_ECDSA = {"1.2.840.10045.4.1": "sha1", "1.2.840.10045.4.3.1": "sha224",
          "1.2.840.10045.4.3.2": "sha256", "1.2.840.10045.4.3.3": "sha384",
          "1.2.840.10045.4.3.4": "sha512"}
_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
_RSA_PSS = "1.2.840.113549.1.1.10"
_ECDSA_PLAIN = {"0.4.0.127.0.7.1.1.4.1.1": "sha1", "0.4.0.127.0.7.1.1.4.1.3": "sha256",
                "0.4.0.127.0.7.1.1.4.1.4": "sha384", "0.4.0.127.0.7.1.1.4.1.5": "sha512"}


@dataclass
class Passive:
    level: str          # "chain" | "signature" | "failed"
    reason: str         # why failed, or what was not checked


def _fail(reason: str) -> Passive:
    return Passive("failed", reason)


def _verify_signature(key, sod: lds.Sod, signed: bytes) -> None:
    """Raises InvalidSignature or ChipError."""
    alg = sod.sig_alg
    if isinstance(key, rsa.RSAPublicKey):
        if alg in _RSA_PKCS1 or alg == _RSA_ENCRYPTION:
            name = _RSA_PKCS1.get(alg, sod.digest_name)
            key.verify(sod.signature, signed, padding.PKCS1v15(), _HASH[name]())
            return
        if alg == _RSA_PSS:
            name = sod.digest_name      # the PSS parameters' hash is the signer's digest in 9303
            key.verify(sod.signature, signed,
                       padding.PSS(padding.MGF1(_HASH[name]()), padding.PSS.AUTO), _HASH[name]())
            return
    if isinstance(key, ec.EllipticCurvePublicKey):
        if alg in _ECDSA:
            key.verify(sod.signature, signed, ec.ECDSA(_HASH[_ECDSA[alg]]()))
            return
        if alg in _ECDSA_PLAIN:                 # BSI TR-03111 plain r||s
            half = len(sod.signature) // 2
            der = encode_dss_signature(int.from_bytes(sod.signature[:half], "big"),
                                       int.from_bytes(sod.signature[half:], "big"))
            key.verify(der, signed, ec.ECDSA(_HASH[_ECDSA_PLAIN[alg]]()))
            return
    raise ChipError(f"signature algorithm {alg} with a {type(key).__name__} is not supported")


def load_cscas(csca_dir: Path) -> list[x509.Certificate]:
    """The CSCA certificates of the trust store (bounded in count and size; unreadable files
    are skipped: a stray README does not disable the chain check)."""
    out: list[x509.Certificate] = []
    for p in sorted(csca_dir.iterdir())[:MAX_CSCA_FILES]:
        try:
            if not p.is_file() or p.stat().st_size > MAX_CSCA_BYTES:
                continue
            raw = p.read_bytes()
            if b"-----BEGIN CERTIFICATE-----" in raw:
                out.extend(x509.load_pem_x509_certificates(raw))
            else:
                out.append(x509.load_der_x509_certificate(raw))
        except (OSError, ValueError):
            continue
    return out


def verify(sod_bytes: bytes, groups: dict[int, bytes], csca_dir: Path | None = None,
           now: datetime | None = None) -> Passive:
    """Passive authentication of the data groups read (number -> file bytes)."""
    now = now or datetime.now(timezone.utc)
    try:
        sod = lds.parse_sod(sod_bytes)
    except ChipError as e:
        return _fail(f"SOD unreadable: {e}")
    if sod.hash_name not in _HASH or sod.digest_name not in _HASH:
        return _fail("SOD uses an unknown hash")
    for n, data in sorted(groups.items()):
        want = sod.dg_hashes.get(n)
        if want is None:
            return _fail(f"DG{n} has no hash in the SOD")
        if not hmac.compare_digest(lds.digest(sod.hash_name, data), want):
            return _fail(f"DG{n} does not match its hash in the SOD")
    if sod.signed_attrs is not None:
        if sod.message_digest is None:
            return _fail("SOD signed attributes have no messageDigest")
        if not hmac.compare_digest(lds.digest(sod.digest_name, sod.econtent), sod.message_digest):
            return _fail("SOD messageDigest does not match its content")
        signed = sod.signed_attrs
    else:
        signed = sod.econtent
    try:
        ds = x509.load_der_x509_certificate(sod.certificate)
        key = ds.public_key()
    except (ValueError, UnsupportedAlgorithm) as e:
        return _fail(f"DS certificate unreadable: {str(e)[:80]}")
    try:
        _verify_signature(key, sod, signed)
    except InvalidSignature:
        return _fail("SOD signature does not verify with its DS certificate")
    except (ChipError, ValueError, UnsupportedAlgorithm) as e:
        return _fail(f"SOD signature not checkable: {str(e)[:80]}")
    if not ds.not_valid_before_utc <= now <= ds.not_valid_after_utc:
        return _fail(f"DS certificate not valid today (valid {ds.not_valid_before_utc:%Y-%m-%d}"
                     f" to {ds.not_valid_after_utc:%Y-%m-%d})")
    if csca_dir is None:
        return Passive("signature", "CSCA chain not checked: no trust store configured")
    try:
        cscas = load_cscas(Path(csca_dir))
    except OSError as e:
        return Passive("signature", f"CSCA chain not checked: trust store unreadable ({e.strerror})")
    if not cscas:
        return Passive("signature", "CSCA chain not checked: the trust store has no certificate")
    for ca in cscas:
        if ca.subject != ds.issuer:
            continue
        try:
            ds.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
        return Passive("chain", "")
    return _fail("DS certificate not issued by a CSCA of the trust store")
