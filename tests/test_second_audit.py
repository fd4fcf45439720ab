"""The second security audit (issue 21), station side: one test per finding, numbered as in
docs/reliability.md "Security findings (second audit)"."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.outbox import Outbox
from support.daemon import cli, config


def _station_of_nobody(tmp_path: Path) -> tuple[Path, Path, str]:
    """A stopped station whose state dir belongs to the service user ('nobody')."""
    os.chmod(tmp_path, 0o755)
    state = tmp_path / "state"
    box = Outbox(state / "outbox.db", station="counter-it")
    row = box.put({"read_at": "2026-11-24T08:00:00+07:00", "clock_synced": True, "kind": "cccd",
                   "verdict": "ok", "problems": [], "card": {"name": "An", "id_number": "079090001234"}})
    box.close()
    os.system(f"chown -R nobody:nogroup {state}")
    return config(tmp_path, state), state, row.id


# --- 1: root commands never follow links in the state dir --------------------------------------

@pytest.mark.parametrize("args", [("status",), ("status", "--json"), ("queue", "list"),
                                  ("queue", "show", "ID"), ("queue", "export", "OUT")])
@pytest.mark.parametrize("suffix", ["-shm", "-wal"])
def test_root_read_only_commands_never_chown_through_a_link(tmp_path, args, suffix):
    conf, state, event_id = _station_of_nobody(tmp_path)
    victim = tmp_path / "shadow"
    victim.write_text("root:secret\n")
    os.chmod(victim, 0o640)
    # the service user (the attacker) plants a link where SQLite keeps its side file
    link = Path(f"{state / 'outbox.db'}{suffix}")
    link.unlink(missing_ok=True)
    link.symlink_to(victim)
    os.lchown(link, 65534, 65534)
    args = [a.replace("ID", event_id).replace("OUT", str(tmp_path / "out.jsonl")) for a in args]
    done = cli(args[0], "-c", str(conf), *args[1:])
    st = victim.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o640), done.stderr
    assert victim.read_text() == "root:secret\n" and link.is_symlink()
    assert "Traceback" not in done.stderr, done.stderr


def test_root_write_commands_refuse_a_link_in_the_state_dir(tmp_path):
    conf, state, event_id = _station_of_nobody(tmp_path)
    victim = tmp_path / "shadow"
    victim.write_text("root:secret\n")
    link = Path(f"{state / 'outbox.db'}-wal")
    link.symlink_to(victim)
    done = cli("queue", "-c", str(conf), "retry", event_id)
    assert done.returncode != 0 and "symbolic link" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert victim.stat().st_uid == 0 and victim.read_text() == "root:secret\n"


# --- 2: card data never becomes a key press ------------------------------------------------------

HOSTILE = ["\n", "\t", "\r\n", "\r", "\x1b", "\x7f", "\x85", "\u2028", "\u202e"]


@pytest.mark.parametrize("evil", HOSTILE)
def test_card_data_with_control_characters_is_typed_and_sent_with_them_removed(evil):
    from agent.cards import read_card
    from agent.config import Config
    from agent.outputs import hid
    from agent.outputs.devices import Output
    from agent.sim.demo import BHYT15, CCCD

    cfg = Config()
    bhyt = BHYT15.replace("|", "|" + evil, 3)                  # at the start of fields 2 to 4
    read = read_card(bhyt)
    assert read.kind == "bhyt"
    keyboard = Output(cfg.keyboard, None)
    typed = keyboard.text("bhyt", read.card, bhyt)
    assert typed == BHYT15 + "\n"                              # one Enter: the template's own
    assert hid.decode(hid.encode(typed)) == typed
    assert hid.decode(hid.encode_alt_numpad(typed)) == typed
    serial = Output(cfg.serial, None)
    cccd = CCCD.replace("|", evil + "|", 1)
    sent = serial.text("cccd", read_card(cccd).card, cccd)
    assert sent == CCCD + "\n"
    # the card's own fields, too: only {tab}/{enter} of the template are keys
    card = {**read.card, "card_number": "AB\t12\n3\r"}
    from agent.outputs.template import render
    assert render("{card_number}{tab}{birth_date}{enter}", card, bhyt) == f"AB123\t{read.card['birth_date']}\n"
