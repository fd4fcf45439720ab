"""`scanner-agent queue`: inspect the outbox, force a resend, export for manual entry, import.

Names, birth dates, addresses and card numbers are masked unless --reveal. Nothing here deletes
an undelivered check-in, except `remove`, and only after writing it to a new file.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from agent import paths
from agent.admin.files import write_private
from agent.cards import mask_name
from agent.cards.sanitize import clean_text, one_line
from agent.config import Config, ConfigError
from agent.event import MAX_CHECKIN_BYTES, encode
from agent.mqtt.schemas import errors as schema_errors
from agent.outbox import Outbox, OutboxError
from agent.outbox.salvage import is_database, salvage
from agent.outbox.store import IMPORT_BATCH, too_large

#: a check-in is a few kilobytes, three levels deep: an import line beyond these is not one, and
#: is refused before it is parsed (a deeply nested line would exhaust the parser's recursion)
MAX_LINE_BYTES = 1 << 16
MAX_DEPTH = 16
SHOWN = 20          # refusals an import names one by one; the rest are counted

PRIVATE = ("name", "address", "guardian", "birth_date", "card_number", "bhxh_number", "id_number",
           "old_id_number", "management_code", "check_string", "extra")


def masked(payload: dict[str, Any]) -> dict[str, Any]:
    card = dict(payload.get("card", {}))
    for key in PRIVATE:
        value = card.get(key)
        if value in (None, "", []):
            continue
        if key == "name":
            card[key] = mask_name(value)
        elif key == "birth_date":
            card[key] = str(value)[:4] + "-**-**" if len(str(value)) > 4 else "****"
        elif isinstance(value, str) and key.endswith(("number", "code")) and len(value) > 4:
            card[key] = "*" * (len(value) - 4) + value[-4:]
        else:
            card[key] = "***"
    return {**payload, "card": card}


def row_state(row, receipts: bool) -> str:
    """delivered; UNDELIVERABLE (set aside: the broker will not take it); SENT, AWAITING RECEIPT
    (receipt mode: the broker took it, the hospital has not confirmed it yet); or QUEUED (not sent
    yet, or to be sent again)."""
    if row.delivered_at:
        return "delivered"
    if row.undeliverable_at:
        return "UNDELIVERABLE"
    return "SENT, AWAITING RECEIPT" if receipts and row.attempts else "QUEUED"


def list_rows(box: Outbox, *, limit: int, undelivered_only: bool, reveal: bool, receipts: bool = False) -> list[str]:
    """`receipts`: the station counts a check-in delivered on the hospital's receipt."""
    rows = box.undelivered(limit) if undelivered_only else box.recent(limit)
    lines = [f"{'seq':>6}  {'stored':19}  {'state':22}  {'kind':4}  {'verdict':13}  name"]
    for r in rows:
        card = r.payload.get("card")
        name = clean_text(str(card.get("name") or "")) if isinstance(card, dict) else None
        lines.append(f"{r.seq:>6}  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r.created_at))}  "
                     f"{row_state(r, receipts):22}  {one_line(r.payload.get('kind', '?'), 20):4}  "
                     f"{one_line(r.payload.get('verdict', '?'), 20):13}  {name if reveal else mask_name(name)}  {r.id}")
    return lines


def show(box: Outbox, event_id: str, reveal: bool) -> dict[str, Any] | None:
    row = box.get(event_id)
    if row is None:
        return None
    aside = None if not row.undeliverable_at else {"at": row.undeliverable_at,
                                                   "reason": one_line(row.undeliverable_reason, 300)}
    return {"id": row.id, "seq": row.seq, "stored_at": row.created_at, "delivered_at": row.delivered_at,
            "attempts": row.attempts, "undeliverable": aside,
            "payload": cleaned(row.payload) if reveal else masked(row.payload)}


def export(box: Outbox, path: Path, state_dir: Path | None = None) -> int:
    """Undelivered check-ins, those set aside as undeliverable included, as JSON lines (full
    records: they are for manual entry, or for `queue import` on a replacement station), in a
    fresh file of mode 0600."""
    n = 0

    def write(f) -> None:
        nonlocal n
        for row in box.iter_undelivered():
            f.write((json.dumps(row.payload, ensure_ascii=False) + "\n").encode("utf-8"))
            n += 1
    write_private(path, write, state_dir)
    return n


def remove(box: Outbox, ids: list[str], path: Path, state_dir: Path | None = None) -> list:
    """Write these check-ins (full records, as `export` does) to the new file `path`, on disk
    (fsync'd), then delete them from the outbox: IT's way out for a row the broker will not take.
    Raises KeyError naming an id the outbox does not have, FileExistsError when `path` exists (it
    may hold an earlier removal's only copy): nothing is written or deleted then. The rows removed."""
    rows = []
    for event_id in dict.fromkeys(ids):
        row = box.get(event_id)
        if row is None:
            raise KeyError(event_id)
        rows.append(row)
    if os.path.lexists(path):
        raise FileExistsError(path)

    def write(f) -> None:
        for row in rows:
            f.write((json.dumps(row.payload, ensure_ascii=False) + "\n").encode("utf-8"))
    write_private(path, write, state_dir)
    box.remove([r.id for r in rows])
    return rows


@dataclass
class ImportReport:
    added: int = 0
    already: int = 0                      # ids already in this outbox (import is idempotent)
    rejected: list[str] = field(default_factory=list)   # the first SHOWN records not imported, with why
    refused: int = 0                      # records not imported, all of them
    lost: int | None = 0                  # damaged SQLite file: undelivered rows that could not be read
    source: str = "export"                # "export" (JSON lines) or "damaged outbox" (SQLite)
    method: str = "read"                  # damaged outbox: "read", "header repaired" or "page scan"
    stopped_at: str | None = None         # the record the import stopped at: the outbox held `limit`
    limit: int | None = None              # the most undelivered check-ins the import may fill it to

    def reject(self, why: str) -> None:
        self.refused += 1
        if len(self.rejected) < SHOWN:
            self.rejected.append(why)


def import_limit(max_events: int) -> int:
    """How many undelivered check-ins `queue import` may fill the outbox to: `[outbox] max_events`
    less a tenth (at least one), kept for the patients' own check-ins while the station sends
    (at max_events the station refuses every patient)."""
    return max_events - max(1, max_events // 10)


def too_deep(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON text nests arrays/objects deeper than `limit` (brackets inside strings do not count)."""
    depth, in_string, escaped = 0, False, False
    for b in raw:
        if in_string:
            if escaped:
                escaped = False
            elif b == 0x5C:           # backslash
                escaped = True
            elif b == 0x22:
                in_string = False
        elif b == 0x22:
            in_string = True
        elif b in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif b in (0x5D, 0x7D):
            depth -= 1
    return False


def cleaned(value: Any) -> Any:
    """Every string of a check-in cleaned as the card reader cleans card fields (no escape sequence,
    control, bidi or invisible character): a no-op on what a station stored, but an imported file
    is anyone's, and its text is listed on IT's terminal and forwarded to the hospital."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): cleaned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [cleaned(v) for v in value]
    return value


Record = tuple[str, dict[str, Any], float, int]   # (id, payload, created_at, attempts): Outbox.import_batch's


def _read_export(path: Path, report: ImportReport) -> Iterator[tuple[str, Record]]:
    """The check-ins of a `queue export` file, one line at a time (never the whole file in memory),
    each with where it is ("line N"); what is not a check-in is refused into `report`."""
    with open(path, "rb") as f:
        n = 0
        while raw := f.readline(MAX_LINE_BYTES + 1):
            n += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while (rest := f.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                    pass
                report.reject(f"line {n}: longer than {MAX_LINE_BYTES} bytes, not a check-in")
                continue
            if not raw.strip():
                continue
            if too_deep(raw):
                report.reject(f"line {n}: nested deeper than {MAX_DEPTH} levels, not a check-in")
                continue
            try:
                payload = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                report.reject(f"line {n}: not a JSON object")
                continue
            problems = schema_errors("checkin", payload)
            if problems:
                report.reject(f"line {n}: not a check-in: {one_line(problems[0], 160)}")
                continue
            yield f"line {n}", (payload["id"], payload, time.time(), 0)


def _read_damaged(path: Path, report: ImportReport) -> Iterator[tuple[str, Record]]:
    """The undelivered check-ins salvaged from a damaged outbox (agent.outbox.salvage), each with
    where it is ("record ID"); what is not a check-in is refused into `report`."""
    report.source = "damaged outbox"
    found = salvage(path)
    if found.error and not found.rows and not found.refused:
        raise OSError(f"nothing readable in {path}: {found.error}")
    for why in found.rejected:          # records over the bounds, refused unparsed
        report.reject(why)
    report.refused += found.refused - len(found.rejected)     # the rest of them, counted
    report.lost = found.lost
    report.method = found.method
    for row in found.for_import():      # a damaged file, or anyone's file with a NUL in it
        where = f"record {one_line(row[0], 40)}"
        if problems := schema_errors("checkin", row[1]):
            report.reject(f"{where}: not a check-in: {one_line(problems[0], 160)}")
        else:
            yield where, row


def _sendable(rows: Iterable[tuple[str, Record]], report: ImportReport) -> Iterator[tuple[str, Record]]:
    """Each check-in cleaned (see `cleaned`), and refused when the station could not send it: larger
    than a check-in may be once stored (re-serialised: a 64 kB line can grow past 70 kB)."""
    for where, (event_id, payload, created, attempts) in rows:
        payload = cleaned(payload)
        size = len(encode(payload))
        if size > MAX_CHECKIN_BYTES:
            report.reject(f"{where}: {too_large(size)}: the station could never send it")
            continue
        yield where, (event_id, payload, created, attempts)


def import_file(box: Outbox, path: Path, *, limit: int | None = None) -> ImportReport:
    """Queue the undelivered check-ins of a `queue export` file, or of an outbox file kept aside as
    damaged, for sending with their original ids and payloads (the hospital deduplicates by id).

    Streamed: read, checked and stored IMPORT_BATCH at a time, one transaction each (the station's
    own check-ins go in between). Stops, reading no further, when the outbox holds `limit`
    undelivered check-ins (`import_limit`; None: no limit); the report says where."""
    report = ImportReport(limit=limit)
    rows = _read_damaged(path, report) if is_database(path) else _read_export(path, report)
    batch: list[tuple[str, Record]] = []
    for item in _sendable(rows, report):
        batch.append(item)
        if len(batch) == IMPORT_BATCH:
            if not _store(box, batch, report):
                return report
            batch = []
    if batch:
        _store(box, batch, report)
    return report


def _store(box: Outbox, batch: list[tuple[str, Record]], report: ImportReport) -> bool:
    """One batch into the outbox; False when it reached the limit (report.stopped_at says where)."""
    added, already, taken = box.import_batch([row for _, row in batch], room=report.limit)
    report.added += added
    report.already += already
    if taken < len(batch):
        report.stopped_at = batch[taken][0]
        return False
    return True


def retry(box: Outbox, ids: list[str]) -> list[str]:
    """Mark delivered check-ins undelivered again, or put undeliverable ones back in the queue, so
    the daemon sends them; returns unknown ids."""
    return [i for i in ids if not box.requeue(i)]


def create_outbox(cfg: Config, path: Path) -> None:
    """`queue import` on a replacement station that has never run: a fresh outbox, as the station
    makes it; as root, handed to the state directory's owner (the service user) so the station
    can open it (never through a link)."""
    leftovers = [p for p in (path, *paths.sidecars(path), Path(f"{path}-journal")) if os.path.lexists(p)]
    if leftovers:   # a link or a stray file where the new outbox would go: never followed or reused
        raise OutboxError(f"no outbox at {path}, but {leftovers[0]} is there: move it away first")
    Outbox(path, station=cfg.station.id, max_events=cfg.outbox.max_events, min_free_mb=0).close()
    print(f"created {path} (this station had not run yet)", file=sys.stderr)
    owner = path.parent.stat()
    if os.geteuid() == 0 and owner.st_uid != 0:
        for p in (path, *paths.sidecars(path)):
            try:
                if stat.S_ISREG(p.lstat().st_mode):
                    os.chown(p, owner.st_uid, owner.st_gid, follow_symlinks=False)
            except FileNotFoundError:
                pass


def open_outbox(cfg: Config, *, write: bool, create: bool = False) -> Outbox:
    """The outbox for an IT command: never moved or repaired, created only for `create` (import);
    read-only unless `write`."""
    path = paths.outbox(cfg.station.state_dir)
    if not path.exists() and create:
        create_outbox(cfg, path)
    if not path.exists():
        raise ConfigError(path, ["0: no outbox here (is state_dir right, and has the station run?)"])
    return Outbox(path, station=cfg.station.id, max_events=cfg.outbox.max_events, admin=True,
                  readonly=not write)


def command(args: argparse.Namespace, cfg: Config) -> int:
    """`scanner-agent queue ACTION`, on the outbox of `cfg`'s station."""
    box = open_outbox(cfg, write=args.action in ("retry", "import", "remove"), create=args.action == "import")
    try:
        return _action(args, box, cfg)
    finally:
        box.close()


def _action(args: argparse.Namespace, box: Outbox, cfg: Config) -> int:
    state_dir = Path(cfg.station.state_dir)
    if args.action == "list":
        receipts = cfg.mqtt is not None and cfg.mqtt.delivered_on == "receipt"
        print("\n".join(list_rows(box, limit=args.limit, undelivered_only=not args.all, reveal=args.reveal,
                                  receipts=receipts)))
    elif args.action == "show":
        shown = show(box, args.id, args.reveal)
        if shown is None:
            print(f"no check-in {args.id}", file=sys.stderr)
            return 1
        print(json.dumps(shown, ensure_ascii=False, indent=2))
    elif args.action == "retry":
        unknown = retry(box, args.ids)
        for i in unknown:
            print(f"no check-in {i}", file=sys.stderr)
        print(f"{len(args.ids) - len(unknown)} check-in(s) queued for resending; "
              f"{box.depth()} undelivered in all (a running station sends them within a few seconds, once the broker is reachable)")
        return 1 if unknown else 0
    elif args.action == "export":
        if not args.force and os.path.isfile(args.file) and not os.path.islink(args.file):
            print(f"queue export: {args.file} exists: give a new file name, or --force to replace it",
                  file=sys.stderr)
            return 2
        n = export(box, Path(args.file), state_dir)
        print(f"{n} undelivered check-in(s) written to {args.file} (JSON lines, mode 600; "
              "they contain personal data: delete the file after use)")
    elif args.action == "import":
        return _import(Path(args.file), box, delete_after=args.delete_after)
    elif args.action == "remove":
        return _remove(args.ids, Path(args.export), box, state_dir)
    return 0


def _remove(ids: list[str], path: Path, box: Outbox, state_dir: Path) -> int:
    try:
        rows = remove(box, ids, path, state_dir)
    except KeyError as exc:
        print(f"queue remove: no check-in {one_line(exc.args[0], 60)}: nothing written or removed", file=sys.stderr)
        return 1
    except FileExistsError:
        print(f"queue remove: {path} exists: give a new file name (it may hold an earlier removal's only copy); "
              "nothing removed", file=sys.stderr)
        return 2
    states = ", ".join(f"#{r.seq} {row_state(r, False).lower()}" for r in rows)
    print(f"{len(rows)} check-in(s) written to {path} (JSON lines, mode 600; they contain personal data: enter "
          f"them by hand, then delete the file), then removed from the outbox: {states}; "
          f"{box.depth()} undelivered in all")
    return 0


def _import(path: Path, box: Outbox, *, delete_after: bool) -> int:
    report = import_file(box, path, limit=import_limit(box.max_events))
    for line in report.rejected:
        print(f"{path}: {line}", file=sys.stderr)
    if report.refused > len(report.rejected):
        print(f"{path}: ... and {report.refused - len(report.rejected)} more not imported", file=sys.stderr)
    lost = "" if report.lost == 0 else (f"; {'an unknown number' if report.lost is None else report.lost} "
                                        "undelivered check-in(s) in it could not be read")
    how = {"read": "", "header repaired": ", its damaged header rebuilt in memory",
           "page scan": ", found by a page scan: delivered or not cannot be told, the hospital "
                        "deduplicates by id"}[report.method]
    if report.stopped_at is not None:
        print(f"{path}: import stopped at {report.stopped_at}: the outbox holds {report.limit} undelivered "
              f"check-ins, as many as an import may fill it with ([outbox] max_events = {box.max_events}, less a "
              "tenth kept for the patients' own check-ins); the rest of the file was not read. Run the same "
              "import again once the station has sent some (what is already queued is skipped)", file=sys.stderr)
    print(f"{report.added} check-in(s) queued for sending from {path} ({report.source}{how}), "
          f"{report.already} already queued here, {report.refused} not imported{lost}"
          f"{'; STOPPED at the limit, the rest not read' if report.stopped_at else ''}; "
          f"{box.depth()} undelivered in all")
    if delete_after and not report.refused and report.stopped_at is None:
        from agent.outbox import delete_files

        delete_files(path)
        print(f"{path} deleted: its readable check-ins are safe in the outbox")
    return 1 if report.refused or report.stopped_at else 0
