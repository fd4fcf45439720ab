"""The files of the CCCD chip's LDS (ICAO Doc 9303-10 section 4): EF.COM, DG1 (the TD1 MRZ),
DG13 (Vietnam's own data), DG2 (the face image), DG14/DG15 (keys for the clone checks) and
EF.SOD (a CMS SignedData, RFC 5652, over the data groups' hashes, 9303-10 4.6.2).

DG13 of the CCCD is not in ICAO 9303. Its layout, as public readers parse it:
  6D { SEQUENCE { INTEGER version, OID 1.0.10646.1.0.8 (UTF-8), SET { SEQUENCE { INTEGER n,
  value } ... } } }
with n: 1 ID number, 2 full name, 3 birth date (dd/mm/yyyy), 4 sex, 5 nationality, 6 ethnicity,
7 religion, 8 home town, 9 residence, 10 identifying marks, 11 issue date, 12 expiry,
13 SEQUENCE { father, mother }, 14 SEQUENCE { spouse }, 15/16 the old ID (uncertain).
Sources: github.com/nguyenddat/ript-virtual-recep server/app/services/ExtractCCCD.py (fields
1-13 as SEQUENCE { INTEGER n, string }); public Flutter and TypeScript CCCD readers (13 =
father + mother, 14 = spouse, 15 "other document", 16 "old ID" in one and "unconfirmed" in the
other). So fields are found by their number, never by position; an unknown number is ignored;
the old ID is taken from 15 or 16, whichever holds 9 or 12 digits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from agent.chip import tlv
from agent.chip.bac import check_digit
from agent.chip.pace import CURVES
from agent.chip.tlv import Node, TlvError

DG13_FIELDS = {1: "id_number", 2: "name", 3: "birth_date", 4: "sex", 5: "nationality",
               6: "ethnicity", 7: "religion", 8: "home_town", 9: "residence", 10: "marks",
               11: "issue_date", 12: "expiry"}
_STRING_TAGS = {0x0C, 0x13, 0x16, 0x1E}     # UTF8String, PrintableString, IA5String, BMPString
MAX_FIELD_CHARS = 512

HASHES = {"1.3.14.3.2.26": "sha1", "2.16.840.1.101.3.4.2.4": "sha224",
          "2.16.840.1.101.3.4.2.1": "sha256", "2.16.840.1.101.3.4.2.2": "sha384",
          "2.16.840.1.101.3.4.2.3": "sha512"}
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_LDS_SECURITY_OBJECT = "2.23.136.1.1.1"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_AA_INFO = "2.23.136.1.1.5"


def parse_com(data: bytes) -> list[int]:
    """The data group numbers EF.COM lists (its tag list 5C holds each DG's tag, 0x61 = DG1)."""
    com = tlv.parse(data, 0x60)
    tags = com.need(0x5C, "EF.COM").value
    by_tag = {0x61: 1, 0x75: 2, 0x63: 3, 0x76: 4, 0x65: 5, 0x66: 6, 0x67: 7, 0x68: 8, 0x69: 9,
              0x6A: 10, 0x6B: 11, 0x6C: 12, 0x6D: 13, 0x6E: 14, 0x6F: 15, 0x70: 16}
    return sorted({by_tag[t] for t in tags if t in by_tag})


def parse_dg1(data: bytes) -> dict:
    """The TD1 MRZ (9303-5 4.2). On a CCCD the document number is the ID's last 9 digits and
    the optional data of line 1 starts with the whole 12-digit ID."""
    mrz = tlv.parse(data, 0x61).need(0x5F1F, "DG1").value
    try:
        text = mrz.decode("ascii")
    except UnicodeDecodeError:
        raise TlvError("DG1: MRZ is not ASCII") from None
    if len(text) != 90 or any(not (c.isdigit() or "A" <= c <= "Z" or c == "<") for c in text):
        raise TlvError(f"DG1: not a TD1 MRZ ({len(text)} characters)")
    l1, l2, l3 = text[:30], text[30:60], text[60:]
    optional = l1[15:30].rstrip("<")
    fields = {
        "document_code": l1[0:2].rstrip("<"),
        "issuing_state": l1[2:5],
        "document_number": l1[5:14].rstrip("<"),
        "optional_data": optional,
        "birth_yymmdd": l2[0:6],
        "sex": l2[7],
        "expiry_yymmdd": l2[8:14],
        "nationality": l2[15:18],
        "name": " ".join(p.replace("<", " ").strip() for p in l3.split("<<", 1)).strip(),
    }
    if optional[:12].isdigit() and len(optional) >= 12:
        fields["id_number"] = optional[:12]
    composite = l1[5:30] + l2[0:7] + l2[8:15] + l2[18:29]
    fields["check_digits_ok"] = (check_digit(l1[5:14]) == l1[14] and check_digit(l2[0:6]) == l2[6]
                                 and check_digit(l2[8:14]) == l2[14]
                                 and check_digit(composite) == l2[29])
    return fields


def _text(node: Node | None) -> str | None:
    if node is None or node.constructed or node.tag not in _STRING_TAGS:
        return None
    raw = node.value
    try:
        s = raw.decode("utf-16-be") if node.tag == 0x1E else raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return s[:MAX_FIELD_CHARS].strip()


def parse_dg13(data: bytes) -> dict:
    """The CCCD's DG13 as {name: text}; see the module's docstring for the layout."""
    root = tlv.parse(data, 0x6D)
    fields: dict[int, Node] = {}
    version = None
    # the numbered fields: SEQUENCE { INTEGER n, value } anywhere under the root, bounded by
    # the TLV parser (some readers see them in a SET, some directly in the content SEQUENCE)
    stack = [root]
    while stack:
        node = stack.pop()
        kids = node.children
        if (node.tag == 0x30 and len(kids) >= 2 and kids[0].tag == 0x02
                and len(kids[0].value) == 1 and kids[1].tag != 0x06):
            n = kids[0].value[0]
            if 1 <= n <= 32 and n not in fields:
                fields[n] = kids[1]
            continue
        if node.tag == 0x30 and kids and kids[0].tag == 0x02 and version is None:
            version = int.from_bytes(kids[0].value[:4], "big")
        stack.extend(reversed(kids))
    if not fields:
        raise TlvError("DG13: no numbered fields")
    out: dict = {"version": version}
    for n, key in DG13_FIELDS.items():
        v = _text(fields.get(n))
        if v:
            out[key] = v
    parents = fields.get(13)
    if parents is not None:
        names = [_text(c) for c in parents.children] if parents.constructed else [_text(parents)]
        if names and names[0]:
            out["father"] = names[0]
        if len(names) > 1 and names[1]:
            out["mother"] = names[1]
    spouse = fields.get(14)
    if spouse is not None:
        s = _text(spouse.children[0]) if spouse.constructed and spouse.children else _text(spouse)
        if s:
            out["spouse"] = s
    for n in (15, 16):
        v = _text(fields.get(n))
        if v and v.isdigit() and len(v) in (9, 12):
            out["old_id"] = v
            break
    return out


def dg2_image(data: bytes) -> bytes:
    """The face image of DG2 (9303-10 4.7.2: 75 { 7F61 { 02 count, 7F60 { A1 header,
    5F2E/7F2E ISO 19794-5 record } } }): the JPEG or JPEG 2000 inside the first record."""
    root = tlv.parse(data, 0x75)
    stack = [root]
    while stack:
        node = stack.pop()
        if node.tag in (0x5F2E, 0x7F2E) and not node.constructed:
            rec = node.value
            for magic in (b"\xff\xd8\xff", b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51"):
                i = rec.find(magic)
                if i >= 0:
                    return rec[i:]
            raise TlvError("DG2: no JPEG in the face record")
        stack.extend(reversed(node.children))
    raise TlvError("DG2: no face record")


def dg15_key(data: bytes) -> bytes:
    """The active authentication public key (a DER SubjectPublicKeyInfo) of DG15."""
    root = tlv.parse(data, 0x6F)
    if len(root.children) != 1 or root.children[0].tag != 0x30:
        raise TlvError("DG15: no public key")
    return root.children[0].raw


def dg14_aa_hash(data: bytes) -> str | None:
    """The hash of ECDSA active authentication from DG14's ActiveAuthenticationInfo
    (9303-11 6.1: SEQUENCE { OID 2.23.136.1.1.5, INTEGER 1, OID signatureAlgorithm })."""
    root = tlv.parse(data, 0x6E)
    ecdsa = {"1.2.840.10045.4.1": "sha1", "1.2.840.10045.4.3.1": "sha224",
             "1.2.840.10045.4.3.2": "sha256", "1.2.840.10045.4.3.3": "sha384",
             "1.2.840.10045.4.3.4": "sha512"}
    for s in (root.children[0].children if root.children and root.children[0].tag == 0x31 else []):
        kids = s.children
        if s.tag == 0x30 and len(kids) >= 3 and kids[0].tag == 0x06 and tlv.oid(kids[0], "DG14") == OID_AA_INFO:
            return ecdsa.get(tlv.oid(kids[2], "DG14"))
    return None


# 9303-11 9.2 (the SecurityInfos of chip authentication): id-CA = 0.4.0.127.0.7.2.2.3,
# id-PK = 0.4.0.127.0.7.2.2.1 (bsi-de protocols smartcard 2 = EAC)
_ID_CA, _ID_PK = "0.4.0.127.0.7.2.2.3.", "0.4.0.127.0.7.2.2.1."
CA_CIPHERS = {"1": "3des", "2": "aes128", "3": "aes192", "4": "aes256"}
CA_NAMED_CURVES = {"1.3.36.3.3.2.8.1.1.7": 13, "1.2.840.10045.3.1.7": 12}   # -> pace.CURVES id
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
MAX_SECURITY_INFOS = 16


@dataclass
class CaInfo:
    """What chip authentication needs of DG14 (9303-11 6.2, 9.2): the protocol the chip
    offers and its static key. `curve` is an agent.chip.pace.CURVES id; `point` the static
    public key, an uncompressed point not yet checked against the curve (ca.py does that)."""

    agreement: str          # "ECDH" | "DH"
    cipher: str             # "3des" | "aes128" | "aes192" | "aes256"
    key_id: int | None
    curve: int | None       # None for DH or for domain parameters this terminal does not know
    point: bytes


def _ec_curve(alg: Node) -> int | None:
    """The pace.CURVES id of an id-ecPublicKey AlgorithmIdentifier's parameters: a named curve,
    or explicit ECParameters (RFC 3279 2.3.5, how many eMRTDs write them) equal to a known
    curve; None for anything else."""
    if len(alg.children) < 2:
        return None
    params = alg.children[1]
    if params.tag == 0x06:
        return CA_NAMED_CURVES.get(tlv.oid(params, "DG14 curve"))
    kids = params.children
    if params.tag != 0x30 or len(kids) < 5 or len(kids[1].children) < 2 or len(kids[2].children) < 2:
        return None
    p = int.from_bytes(kids[1].children[1].value, "big")
    a = int.from_bytes(kids[2].children[0].value, "big")
    b = int.from_bytes(kids[2].children[1].value, "big")
    g, n = kids[3].value, int.from_bytes(kids[4].value, "big")
    for cid, c in CURVES.items():
        if (c.p, c.a, c.b, c.n) == (p, a, b, n) and g[1:] == c.gx.to_bytes(c.size, "big") + c.gy.to_bytes(c.size, "big"):
            return cid
    return None


def parse_dg14_ca(data: bytes) -> CaInfo | None:
    """The chip authentication of DG14 (tag 6E, a SET of SecurityInfos, 9303-11 9.2): None when
    DG14 offers none (only active authentication's info, or unknown protocols, which 9.2 says a
    terminal ignores); raises TlvError for a DG14 that is not DER or a CA entry it cannot use."""
    root = tlv.parse(data, 0x6E)
    if len(root.children) != 1 or root.children[0].tag != 0x31:
        raise TlvError("DG14: not a SET of SecurityInfos")
    infos = root.children[0].children
    if len(infos) > MAX_SECURITY_INFOS:
        raise TlvError(f"DG14: {len(infos)} SecurityInfos, more than {MAX_SECURITY_INFOS}")
    protocols: list[tuple[str, str, int | None]] = []
    keys: list[tuple[str, Node, int | None]] = []
    for s in infos:
        kids = s.children
        if s.tag != 0x30 or not kids or kids[0].tag != 0x06:
            raise TlvError("DG14: a SecurityInfo is not SEQUENCE { OID, ... }")
        oid = tlv.oid(kids[0], "DG14")
        if oid.startswith(_ID_CA) and len(kids) >= 2:
            agreement, _, cipher = oid[len(_ID_CA):].partition(".")
            if agreement not in ("1", "2") or cipher not in CA_CIPHERS:
                continue                                   # a CA variant not in 9303: ignored
            if tlv.der_int(kids[1], "DG14 ChipAuthenticationInfo version") != 1:
                raise TlvError("DG14: ChipAuthenticationInfo version is not 1")
            kid = tlv.der_int(kids[2], "DG14 keyId") if len(kids) > 2 else None
            protocols.append(("ECDH" if agreement == "2" else "DH", CA_CIPHERS[cipher], kid))
        elif oid in (_ID_PK + "1", _ID_PK + "2"):
            if len(kids) < 2 or kids[1].tag != 0x30:
                raise TlvError("DG14: ChipAuthenticationPublicKeyInfo without a public key")
            kid = tlv.der_int(kids[2], "DG14 keyId") if len(kids) > 2 else None
            keys.append(("ECDH" if oid.endswith("2") else "DH", kids[1], kid))
    if not protocols and not keys:
        return None
    if not keys:
        raise TlvError("DG14: chip authentication without a public key")
    if not protocols:      # 9303-11 6.2/9.2: without ChipAuthenticationInfo, 3DES is implied
        protocols = [(keys[0][0], "3des", keys[0][2])]
    agreement, cipher, kid = protocols[0]
    key = next((k for k in keys if k[0] == agreement and (kid is None or k[2] in (None, kid))), None)
    if key is None:
        raise TlvError(f"DG14: no {agreement} public key for chip authentication key {kid}")
    spki = key[1].children
    if len(spki) != 2 or spki[0].tag != 0x30 or not spki[0].children or spki[1].tag != 0x03:
        raise TlvError("DG14: the chip authentication key is not a SubjectPublicKeyInfo")
    bits = spki[1].value
    if not bits or bits[0] != 0:
        raise TlvError("DG14: the chip authentication key's BIT STRING is not whole bytes")
    curve = None
    if agreement == "ECDH":
        if tlv.oid(spki[0].children[0], "DG14 key algorithm") != OID_EC_PUBLIC_KEY:
            raise TlvError("DG14: an ECDH chip authentication key that is not an EC key")
        curve = _ec_curve(spki[0])
    return CaInfo(agreement, cipher, kid if kid is not None else key[2], curve, bits[1:])


@dataclass
class Sod:
    """What passive authentication needs of EF.SOD."""

    hash_name: str                  # of the data group hashes
    dg_hashes: dict[int, bytes]
    econtent: bytes                 # the DER LDSSecurityObject the signature covers
    signed_attrs: bytes | None      # DER of the signed attributes, retagged as a SET (31)
    message_digest: bytes | None
    digest_name: str                # the signer's digest algorithm
    sig_alg: str                    # OID of the signature algorithm
    sig_params: Node | None
    signature: bytes
    certificate: bytes              # DER of the Document Signer certificate


def _alg(node: Node, what: str) -> tuple[str, Node | None]:
    if node.tag != 0x30 or not node.children:
        raise TlvError(f"{what}: not an AlgorithmIdentifier")
    return tlv.oid(node.children[0], what), (node.children[1] if len(node.children) > 1 else None)


def parse_sod(data: bytes) -> Sod:
    root = tlv.parse(data, 0x77)
    ci = root.children[0] if len(root.children) == 1 else None
    if ci is None or ci.tag != 0x30 or len(ci.children) < 2:
        raise TlvError("SOD: no ContentInfo")
    if tlv.oid(ci.children[0], "SOD") != OID_SIGNED_DATA:
        raise TlvError("SOD: not a CMS SignedData")
    sd = ci.children[1].children[0] if ci.children[1].children else None
    if sd is None or sd.tag != 0x30 or len(sd.children) < 4:
        raise TlvError("SOD: SignedData malformed")
    kids = sd.children
    encap = kids[2]
    if encap.tag != 0x30 or len(encap.children) != 2 or tlv.oid(encap.children[0], "SOD") != OID_LDS_SECURITY_OBJECT:
        raise TlvError("SOD: no LDSSecurityObject")
    wrapper = encap.children[1]
    if wrapper.tag != 0xA0 or len(wrapper.children) != 1 or wrapper.children[0].tag != 0x04:
        raise TlvError("SOD: eContent malformed")
    econtent = wrapper.children[0].value
    lso = tlv.parse(econtent, 0x30)
    if len(lso.children) < 3:
        raise TlvError("SOD: LDSSecurityObject malformed")
    hash_oid, _ = _alg(lso.children[1], "SOD hash algorithm")
    if hash_oid not in HASHES:
        raise TlvError(f"SOD: unknown hash algorithm {hash_oid}")
    hashes: dict[int, bytes] = {}
    for item in lso.children[2].children:
        if item.tag != 0x30 or len(item.children) != 2 or item.children[1].tag != 0x04:
            raise TlvError("SOD: data group hash malformed")
        hashes[tlv.der_int(item.children[0], "SOD DG number")] = item.children[1].value
    certs = next((k for k in kids[3:] if k.tag == 0xA0), None)
    if certs is None or not certs.children:
        raise TlvError("SOD: no Document Signer certificate")
    infos = kids[-1]
    if infos.tag != 0x31 or len(infos.children) != 1:
        raise TlvError("SOD: not exactly one SignerInfo")
    si = infos.children[0].children
    if len(si) < 5:
        raise TlvError("SOD: SignerInfo malformed")
    digest_oid, _ = _alg(si[2], "SOD digest algorithm")
    i = 3
    signed_attrs = message_digest = None
    if si[3].tag == 0xA0:
        attrs = si[3]
        signed_attrs = b"\x31" + attrs.raw[1:]
        for a in attrs.children:
            if a.tag == 0x30 and len(a.children) == 2 and tlv.oid(a.children[0], "SOD attribute") == OID_MESSAGE_DIGEST:
                vals = a.children[1].children
                if len(vals) != 1 or vals[0].tag != 0x04:
                    raise TlvError("SOD: messageDigest malformed")
                message_digest = vals[0].value
        i = 4
    if len(si) < i + 2:
        raise TlvError("SOD: SignerInfo malformed")
    sig_alg, sig_params = _alg(si[i], "SOD signature algorithm")
    if si[i + 1].tag != 0x04:
        raise TlvError("SOD: no signature")
    if digest_oid not in HASHES:
        raise TlvError(f"SOD: unknown digest algorithm {digest_oid}")
    return Sod(HASHES[hash_oid], hashes, econtent, signed_attrs, message_digest, HASHES[digest_oid],
               sig_alg, sig_params, si[i + 1].value, certs.children[0].raw)


def digest(name: str, data: bytes) -> bytes:
    return hashlib.new(name, data).digest()
