"""CCCD chip benchmark (issue 33): the time to a verified check-in through the simulated chip
behind a reader model, the fuzzed-answer count, and what the access keys try.

    .venv/bin/python bench/chip.py [--long]                # the timing table
    .venv/bin/python bench/chip.py --fuzz 10000            # hostile answers through read_chip
    .venv/bin/python bench/chip.py --keys                  # the access keys tried, per case

Time is virtual, never slept: per APDU the reader model (`ReaderModel`) charges a round trip
(host, reader firmware and the card's own processing: 20-40 ms drawn per APDU from a seeded RNG,
or one fixed value per run) plus the air time of the command and the answer at the link's bit
rate, framed as ISO/IEC 14443 frames them (below). To that is added the terminal's own CPU time
(time.thread_time around read_chip, less the time spent inside the reader model and the simulated
card), so the figure does not depend on the machine's load; "Pi" multiplies that CPU time by
--pi-factor (a Raspberry Pi 4 is several times slower than the development machine).

The framing (ISO/IEC 14443-3:2018 and 14443-4:2018; the 2000 committee draft of part 4,
ISO/IEC JTC 1/SC 17 N 1689, has the same block format):
- Bit rates fc/128, fc/64, fc/32 with fc = 13.56 MHz: 106, 212, 424 kbit/s (14443-2, -3).
- Type A standard frame (14443-3 6.2.3): start of communication (1 bit), each byte as 8 data
  bits + an odd parity bit, end of communication (1 bit): 9n + 2 bit times. A Type B frame costs
  10-12 etu per byte plus SOF/EOF (~22 etu): about 11-30 % more air time; not modelled.
- 14443-4 block (7.1): prologue PCB (1 byte) + CID (1, readers send it) [+ NAD, not used], the
  information field, epilogue EDC = CRC_A (2 bytes). A block is at most FSC (card) / FSD
  (reader) bytes, prologue and EDC included; FSDI/FSCI 8 = 256 bytes (14443-4 5.2.4 table);
  some readers announce less (a RATS of E0 50, as MFRC522 example code sends, is FSDI 5 = 64).
  A longer APDU or answer is chained (7.5.2): every block but the last has the chaining bit set
  and is acknowledged by an R(ACK) block (PCB + CID + EDC, 4 bytes) before the next block,
  i.e. per extra block: the R(ACK)'s air time, two frame delay times (FDT >= 1172/fc = 86 us,
  14443-3 6.2.1.1; NXP MF1S50 data sheet 10.3 gives the same 87 us minimum) and a turnaround
  allowance for the firmware on either side (--block-turn-ms, 1 ms by default: an assumption,
  not a published figure).
- The first block's FDT and the card's processing time are in the per-APDU round trip. A read
  with the default 223-byte chunks never chains at FSD 256 (the largest answer is a protected
  READ BINARY: 244 bytes + 4 of framing); extended-length chunks (--chunk 1000) and small FSDs do.

DG2: the ICAO does not fix the face image's size; the BSI BioPII study measured compressed face
images of 9.7-25.9 kB, 13.6 kB on average (cited at epass-buch.de, "ePass" chapter 4.3.6), and
the CCCD's is reported to be of that order. The table uses 12 and 20 kB JPEGs; a DG2 of more
than 32 kB is refused (terminal.MAX_BYTES, and files.py's even-INS READ BINARY stops at offset
32767: the odd INS is not implemented), which --dg2-kb 33 shows.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.chip import access as chip_access_mod  # noqa: E402
from agent.chip import files, pace, tlv  # noqa: E402
from agent.chip.terminal import ChipResult, read_chip  # noqa: E402
from agent.chip.transport import CardLost  # noqa: E402
from agent.sim.chip import TINY_JPEG, SimCard, SimChip, TestPki, damage, make_pki  # noqa: E402

FC = 13.56e6
DIVISOR = {106: 128, 212: 64, 424: 32}     # bit time = divisor / fc (ISO/IEC 14443-2)
FDT_S = 1172 / FC                          # minimum frame delay time (14443-3 6.2.1.1)


@dataclass
class Link:
    """The reader and the air interface (see the module docstring for where each figure is from)."""

    kbps: int = 106
    rtt_ms: float | None = None        # fixed round trip per APDU; None: uniform(*rtt_range)
    rtt_range: tuple[float, float] = (20.0, 40.0)
    seed: int = 33
    fsd: int = 256                     # largest block the reader takes (answers)
    fsc: int = 256                     # largest block the card takes (commands)
    cid: bool = True
    nad: bool = False
    block_turn_ms: float = 1.0         # firmware turnaround per chained block, both sides

    def bit_s(self) -> float:
        return DIVISOR[self.kbps] / FC

    def frame_s(self, n: int) -> float:
        """Air time of one Type A standard frame of n bytes."""
        return (9 * n + 2) * self.bit_s()

    def message(self, n: int, fs: int) -> tuple[int, float]:
        """(blocks, seconds) to carry an n-byte APDU or answer in blocks of at most fs bytes."""
        prologue = 1 + self.cid + self.nad
        room = fs - prologue - 2
        if room < 1:
            raise ValueError(f"frame size {fs} leaves no room for data")
        blocks = max(1, math.ceil(n / room))
        seconds = sum(self.frame_s(prologue + min(room, n - i * room) + 2) for i in range(blocks))
        ack = self.frame_s(1 + self.cid + 2)
        seconds += (blocks - 1) * (ack + 2 * FDT_S + self.block_turn_ms / 1000)
        return blocks, seconds


@dataclass
class Exchange:
    command: int
    answer: int
    blocks: int
    rtt_s: float
    air_s: float


class ReaderModel:
    """A Transport over a SimChip that charges each APDU its modelled time (nothing sleeps)."""

    def __init__(self, chip: SimChip, link: Link):
        self.chip, self.link = chip, link
        self.rng = random.Random(link.seed)
        self.log: list[Exchange] = []
        self.inside_cpu = 0.0          # thread CPU spent here and in the simulated card

    def transmit(self, apdu: bytes) -> bytes:
        t0 = time.thread_time()
        try:
            resp = self.chip.transmit(apdu)
            rtt = (self.link.rtt_ms if self.link.rtt_ms is not None
                   else self.rng.uniform(*self.link.rtt_range)) / 1000
            up_blocks, up = self.link.message(len(apdu), self.link.fsc)
            down_blocks, down = self.link.message(len(resp), self.link.fsd)
            self.log.append(Exchange(len(apdu), len(resp), up_blocks + down_blocks, rtt, up + down))
            return resp
        finally:
            self.inside_cpu += time.thread_time() - t0

    @property
    def apdus(self) -> int:
        return len(self.log)

    @property
    def bytes(self) -> int:
        return sum(e.command + e.answer for e in self.log)

    @property
    def link_s(self) -> float:
        return sum(e.rtt_s + e.air_s for e in self.log)

    @property
    def air_s(self) -> float:
        return sum(e.air_s for e in self.log)


@dataclass
class Run:
    result: ChipResult
    apdus: int
    bytes: int
    blocks: int
    link_s: float
    air_s: float
    cpu_s: float

    def modelled(self, pi_factor: float = 1.0) -> float:
        return self.link_s + pi_factor * self.cpu_s


def timed_read(chip: SimChip, access, link: Link, *, want_dg2: bool, csca_dir: Path | None,
               chunk: int = files.SHORT_CHUNK) -> Run:
    """One read_chip through the reader model; the terminal's CPU time measured, the card's not."""
    model = ReaderModel(chip, link)
    t0 = time.thread_time()
    r = read_chip(model, access, want_dg2=want_dg2, csca_dir=csca_dir, pace=pace.pace, chunk=chunk)
    cpu = time.thread_time() - t0 - model.inside_cpu
    return Run(r, model.apdus, model.bytes, sum(e.blocks for e in model.log), model.link_s,
               model.air_s, max(cpu, 0.0))


# --- the cards of the table: one per way in, their access from the real access module ---------

@dataclass
class Case:
    name: str
    card: SimCard
    issued: date
    pace: bool                 # the chip answers PACE (else the terminal falls back to BAC)
    access: object = None

    def __post_init__(self):
        card = {"id_number": self.card.id_number, "birth_date": self.card.birth_date.isoformat()}
        self.access = chip_access_mod.chip_access(card, self.issued)


def cases() -> list[Case]:
    """PACE-CAN; BAC opened by the first expiry candidate; by the second (issued on the 23rd
    birthday: the strict reading of art. 21(2)); by the third (29 February, taken as 01/03)."""
    first = SimCard()                       # born 14/03/1989, issued 01/07/2021 at 32: to 40
    second = SimCard(id_number="001099012345", birth_date=date(1999, 6, 10),
                     issued=date(2022, 6, 10), expiry=date(2024, 6, 10))
    third = SimCard(id_number="001200012345", birth_date=date(2000, 2, 29),
                    issued=date(2023, 2, 28), expiry=date(2025, 3, 1))
    return [Case("PACE-CAN", first, first.issued, True),
            Case("BAC, 1st expiry", first, first.issued, False),
            Case("BAC, 2nd expiry", second, second.issued, False),
            Case("BAC, 3rd expiry", third, third.issued, False)]


def face(kb: float, seed: int = 2) -> bytes:
    """A JPEG-shaped face image of kb kilobytes (SOI + APP0 of TINY_JPEG, random body, EOI)."""
    n = int(kb * 1024)
    if n <= len(TINY_JPEG):
        return TINY_JPEG
    head = TINY_JPEG[:20]
    return head + random.Random(seed).randbytes(n - len(head) - 2) + b"\xff\xd9"


def table(pki: TestPki, *, kbps_list=(106, 212, 424), rtts=(20.0, 40.0), dg2_kb=(0, 12, 20),
          pi_factor: float = 4.0, fsd: int = 256, block_turn_ms: float = 1.0,
          chunk: int = files.SHORT_CHUNK,
          only: Callable[[Case], bool] | None = None) -> list[dict]:
    rows = []
    for case in cases():
        if only and not only(case):
            continue
        for kb in dg2_kb:
            card = dataclasses.replace(case.card, face_jpeg=face(kb) if kb else TINY_JPEG)
            chip = SimChip(card, pki, pace=case.pace)
            for kbps in kbps_list:
                for rtt in rtts:
                    run = timed_read(chip, case.access, Link(kbps=kbps, rtt_ms=rtt, fsd=fsd,
                                                                block_turn_ms=block_turn_ms),
                                     want_dg2=bool(kb), csca_dir=pki.csca_dir, chunk=chunk)
                    r = run.result
                    rows.append({"access": case.name, "dg2": f"{kb} kB" if kb else "no",
                                 "kbps": kbps, "rtt": rtt, "apdus": run.apdus, "bytes": run.bytes,
                                 "blocks": run.blocks, "air": run.air_s, "link": run.link_s,
                                 "cpu": run.cpu_s, "s": run.modelled(), "pi": run.modelled(pi_factor),
                                 "verified": r.verified, "how": r.access,
                                 "reason": r.reason if r.verified not in ("chain",) else ""})
    return rows


def print_grid(rows: list[dict], pi_factor: float) -> None:
    """One line per (access, DG2): APDUs, bytes, CPU, then the Pi figure per (kbit/s, RTT)."""
    cols = list(dict.fromkeys((r["kbps"], r["rtt"]) for r in rows))
    head = " | ".join(f"{k} / {'20-40' if t is None else f'{t:g}'}" for k, t in cols)
    print(f"| access | DG2 | APDUs | bytes | terminal CPU ms | {head} | result |")
    print("|---" * (5 + len(cols) + 1) + "|")
    for key in dict.fromkeys((r["access"], r["dg2"]) for r in rows):
        group = [r for r in rows if (r["access"], r["dg2"]) == key]
        first = group[0]
        cpu = sorted(r["cpu"] for r in group)[len(group) // 2]
        cells = " | ".join(f"{next(r['pi'] for r in group if (r['kbps'], r['rtt']) == c):.2f}" for c in cols)
        result = first["verified"] + (f" ({first['reason']})" if first["reason"] else "")
        print(f"| {key[0]} | {key[1]} | {first['apdus']} | {first['bytes']} | {cpu * 1000:.0f} | "
              f"{cells} | {result} |")


def print_table(rows: list[dict], pi_factor: float) -> None:
    print(f"| access | DG2 | kbit/s | RTT ms | APDUs | bytes | air s | terminal CPU ms | "
          f"modelled s | Pi (CPU x{pi_factor:g}) s | result |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        result = r["verified"] + (f" ({r['reason']})" if r["reason"] else "")
        rtt = "20-40" if r["rtt"] is None else f"{r['rtt']:g}"
        print(f"| {r['access']} | {r['dg2']} | {r['kbps']} | {rtt} | {r['apdus']} | "
              f"{r['bytes']} | {r['air']:.3f} | {r['cpu'] * 1000:.0f} | {r['s']:.2f} | {r['pi']:.2f} | "
              f"{result} |")


# --- fuzz: hostile answers through read_chip ----------------------------------------------------

def _damage_file(rng: random.Random, data: bytes) -> bytes:
    """Half the time inside the outer TLV with its length made right again, so the damage
    reaches the nested structure; else anywhere."""
    if rng.random() < 0.5:
        try:
            outer = tlv.parse(data)
            return tlv.encode(outer.tag, damage(rng, outer.value))
        except tlv.TlvError:
            pass
    return damage(rng, data)


def _as_read(data: bytes) -> bytes:
    """What files.read_file takes of a file: as many bytes as its first TLV header says (bytes
    appended after it are never read, so damage there is no damage)."""
    try:
        _, _, vstart, n = tlv.header(data[:8], 0)
    except tlv.TlvError:
        return data
    return data[:vstart + n]


SW_POOL = [b"\x90\x00", b"\x62\x82", b"\x6a\x82", b"\x69\x82", b"\x69\x88", b"\x67\x00",
           b"\x6b\x00", b"\x6c\x10", b"\x61\x10", b"\x63\x00", b"\x6d\x00", b"\x6f\x00"]


class _AnswerFault:
    """A corrupt.response hook that spoils one answer (the target-th) the way `kind` says."""

    def __init__(self, rng: random.Random, kind: str, target: int):
        self.rng, self.kind, self.target, self.seen, self.fired = rng, kind, target, 0, False

    def __call__(self, apdu: bytes, resp: bytes) -> bytes:
        self.seen += 1
        if self.seen != self.target:
            return resp
        self.fired = True
        rng, kind = self.rng, self.kind
        if kind == "garbage":
            return rng.randbytes(rng.randint(0, 300))
        if kind == "truncated":
            return resp[:rng.randrange(len(resp) + 1)]
        if kind == "long":                       # more than asked: data repeated or padded
            return resp[:-2] + rng.randbytes(rng.randint(1, 400)) + resp[-2:]
        if kind == "bad mac" and len(resp) > 10:
            i = len(resp) - 3 - rng.randrange(8)  # inside DO8E's MAC (before the SW)
            return resp[:i] + bytes([resp[i] ^ (1 << rng.randrange(8))]) + resp[i + 1:]
        if kind == "status":
            return (resp[:-2] if rng.random() < 0.5 else b"") + rng.choice(SW_POOL + [rng.randbytes(2)])
        return damage(rng, resp)


KINDS = ["file", "garbage", "truncated", "long", "bad mac", "status", "damaged answer", "lifted"]


def fuzz(pki: TestPki, n: int, seed: int = 33, *, budget_s: float | None = None,
         progress: bool = False) -> dict:
    """n hostile reads through read_chip (BAC and PACE chips, DG2 on a third of them); counts the
    exceptions that escape read_chip (each a traceback), the outcomes and the kinds."""
    rng = random.Random(seed)
    card = SimCard(spouse="Lê Thị Dung", face_jpeg=face(2))
    chips = {"bac": SimChip(card, pki, pace=False, aa=True),
             "bac-ec": SimChip(card, pki, pace=False, aa="ec"),
             "pace": SimChip(card, pki, pace=True, aa="ec")}
    originals = {k: dict(c.files) for k, c in chips.items()}
    acc = chip_access_mod.chip_access({"id_number": card.id_number,
                                       "birth_date": card.birth_date.isoformat()}, card.issued)
    fids = [files.FID_COM, files.FID_SOD, *(files.DG_FID[g] for g in (1, 2, 13, 14, 15))]
    out: dict = {"cases": 0, "tracebacks": 0, "outcomes": {}, "kinds": {}, "samples": [],
                 "not_reached": 0, "damaged_yet_chain": {}}
    t0 = time.monotonic()
    for case in range(n):
        if budget_s is not None and time.monotonic() - t0 > budget_s:
            break
        name = "pace" if case % 5 == 0 else rng.choice(["bac", "bac-ec"])
        chip = chips[name]
        chip.files = dict(originals[name])
        chip.corrupt.response, chip.lift_after, chip.apdus, chip.sm = None, None, 0, None
        kind, want_dg2 = rng.choice(KINDS), case % 3 == 0
        last = (29 if name == "pace" else 24) + (11 if want_dg2 else 0)   # APDUs of a clean read
        fid, hook = None, None
        if kind == "file":
            fid = rng.choice([f for f in fids if f in chip.files])
            chip.files[fid] = _damage_file(rng, originals[name][fid])
        elif kind == "lifted":
            chip.lift_after = rng.randint(0, last - 1)
        else:
            hook = chip.corrupt.response = _AnswerFault(rng, kind, rng.randint(1, last))
        try:
            r = read_chip(chip, acc, csca_dir=pki.csca_dir, pace=pace.pace,
                          want_dg2=want_dg2, deadline_s=20)
            out["outcomes"][r.verified] = out["outcomes"].get(r.verified, 0) + 1
            if hook is not None and not hook.fired:
                out["not_reached"] += 1
            if (r.verified == "chain" and fid is not None
                    and _as_read(chip.files[fid]) != originals[name][fid]
                    and (fid != files.DG_FID[2] or want_dg2)):
                key = f"{fid:04X} (clone check {r.clone_check})"
                out["damaged_yet_chain"][key] = out["damaged_yet_chain"].get(key, 0) + 1
        except Exception as e:                                   # noqa: BLE001 - counted
            out["tracebacks"] += 1
            if len(out["samples"]) < 5:
                out["samples"].append(f"case {case} ({name}, {kind}): "
                                      + "".join(traceback.format_exception_only(type(e), e)).strip())
        out["kinds"][kind] = out["kinds"].get(kind, 0) + 1
        out["cases"] += 1
        if progress and out["cases"] % 1000 == 0:
            print(f"  {out['cases']} cases, {out['tracebacks']} tracebacks, "
                  f"{time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    for name, chip in chips.items():
        chip.files, chip.corrupt.response, chip.lift_after = originals[name], None, None
    out["seconds"] = time.monotonic() - t0
    return out


# --- the access keys: what is tried for each kind of case ----------------------------------------

def keys_table() -> None:
    """Runs access.chip_access over the rows of tests/test_chip_access.py and prints the attempts."""
    sys.path.insert(0, str(ROOT / "tests"))
    import test_chip_access as t                                  # noqa: E402
    rows = [(c, b, i, None) for c, b, i, _ in t.ISSUED] + [(c, b, None, d) for c, b, d, _ in t.NO_ISSUE]
    rows += [(f"partial birth date {b}", b, date(2021, 6, 15), None) for b in ("1990", "1990-05")]
    print("| case | birth | issued (or today) | tried, in order | BAC refusals at worst |")
    print("|---|---|---|---|---|")
    for case, birth, issued, today in rows:
        a = chip_access_mod.chip_access({"id_number": t.ID, "birth_date": birth}, issued, today=today)
        tried = [f"PACE-CAN {a.can}"] + [f"BAC {e}" for e, _ in a.expiry_candidates]
        when = issued.isoformat() if issued else f"none (today {today.isoformat() if today else 'unknown'})"
        worst = max(len(a.expiry_candidates) - 1, 0) if a.birth_yymmdd else "no BAC"
        print(f"| {case} | {birth} | {when} | {'; '.join(tried)} | {worst} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fuzz", type=int, metavar="N", help="N fuzzed reads instead of the table")
    p.add_argument("--fuzz-budget", type=float, metavar="S", help="stop the fuzz after S seconds")
    p.add_argument("--keys", action="store_true", help="print what the access keys try per case")
    p.add_argument("--pi-factor", type=float, default=4.0)
    p.add_argument("--kbps", default="106,212,424")
    p.add_argument("--rtt", default="20,40,random",
                   help="RTTs in ms, fixed per run, or 'random' (drawn 20-40 per APDU)")
    p.add_argument("--dg2-kb", default="0,12,20", help="DG2 face JPEG sizes in kB (0: no DG2)")
    p.add_argument("--fsd", type=int, default=256, help="the reader's FSD (largest answer block)")
    p.add_argument("--block-turn-ms", type=float, default=1.0,
                   help="firmware turnaround per chained block (an assumption)")
    p.add_argument("--chunk", type=int, default=files.SHORT_CHUNK,
                   help="READ BINARY chunk (over 223: extended length)")
    p.add_argument("--access", default="", help="only the cases whose name contains this")
    p.add_argument("--long", action="store_true",
                   help="one line per configuration (air time, link and modelled seconds too)")
    args = p.parse_args(argv)
    if args.keys:
        keys_table()
        return 0
    with tempfile.TemporaryDirectory() as d:
        pki = make_pki(Path(d))
        if args.fuzz:
            out = fuzz(pki, args.fuzz, budget_s=args.fuzz_budget, progress=True)
            rate = out["cases"] / out["seconds"] if out["seconds"] else 0
            print(f"fuzzed reads: {out['cases']} in {out['seconds']:.0f} s ({rate:.1f}/s); "
                  f"tracebacks: {out['tracebacks']}")
            print("outcomes:", ", ".join(f"{k} {v}" for k, v in sorted(out["outcomes"].items())))
            print("kinds:", ", ".join(f"{k} {v}" for k, v in sorted(out["kinds"].items())))
            print(f"spoilt answers the read ended before reaching: {out['not_reached']}")
            print("a damaged file that was read, yet verified 'chain':",
                  ", ".join(f"{k}: {v}" for k, v in sorted(out["damaged_yet_chain"].items())) or "none")
            for s in out["samples"]:
                print("  ", s)
            return 1 if out["tracebacks"] else 0
        rtts = [None if x == "random" else float(x) for x in args.rtt.split(",")]
        rows = table(pki, kbps_list=[int(x) for x in args.kbps.split(",")], rtts=rtts,
                     dg2_kb=[float(x) if "." in x else int(x) for x in args.dg2_kb.split(",")],
                     pi_factor=args.pi_factor, fsd=args.fsd,
                     block_turn_ms=args.block_turn_ms, chunk=args.chunk,
                     only=(lambda c: args.access.lower() in c.name.lower()) if args.access else None)
        if args.long:
            print_table(rows, args.pi_factor)
        else:
            print(f"Seconds to a verified read, terminal CPU x{args.pi_factor:g} (Pi), "
                  "per kbit/s / RTT ms:\n")
            print_grid(rows, args.pi_factor)
        worst = max((r["pi"] for r in rows if r["dg2"] == "no" and r["kbps"] == 106), default=None)
        if worst is not None:
            print(f"\nslowest verified read without DG2 at 106 kbit/s (Pi): {worst:.2f} s "
                  f"(target under 2 s: {'met' if worst < 2 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
