"""`scanner-agent fleet`: every station of a hospital at a glance, from the retained `status` and
`health` topics on the broker, from any machine that reaches it.

Exit status, as Nagios / Icinga / Zabbix checks use it: 0 all well, 1 a warning (health stale,
a queue older than --warn, a check-in set aside as undeliverable, clock not synchronised, only a
voice fault), 2 a station offline or faulty (or a queue older than --crit), 3 unknown (the broker
cannot be reached, or no station has reported).
Everything read from the broker is untrusted: bounded before parsing (size, nesting), every field
type-checked (a field of the wrong type, or a NaN, is named and makes the station a warning at
least), cleaned, never a traceback. More stations than MAX_STATIONS: the rest is one row, UNKNOWN,
or CRITICAL when one of them is not online (their status is still read).
"""

from __future__ import annotations

import json
import math
import secrets
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent import jsonbound
from agent.cards.sanitize import one_line
from agent.config import Config, MqttConfig
from agent.faults import WARNING_CODES   # codes only a warning: the station checks in as well without them
from agent.mqtt.session import describe, make_client

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
SEVERITY = (OK, WARNING, UNKNOWN, CRITICAL)   # overall: a CRITICAL station outranks an UNKNOWN
MAX_PAYLOAD = 16_384
MAX_NESTING = 8        # status and health nest 2 deep
MAX_STATIONS = 2_000   # assessed and shown one by one
MAX_TRACKED = 100_000  # beyond MAX_STATIONS, only their state is kept (for the summary row)


@dataclass
class Station:
    id: str
    status: dict[str, Any] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)
    cut: bool = False   # beyond MAX_STATIONS: only status["state"] kept, summarised in one row


def _text(value: Any, limit: int = 120) -> str:
    return one_line(value, limit) if value is not None else "-"


def _age(stamp: Any, now: float) -> float | None:
    try:
        return max(0.0, now - datetime.fromisoformat(str(stamp)).timestamp())
    except (TypeError, ValueError, OverflowError):
        return None


def _typed(report: dict[str, Any], key: str, kinds: tuple[type, ...], bad: list[str]) -> Any:
    """report[key] when it has one of these types (a number: finite, not a bool); None when it is
    absent or null; a wrong type is named in `bad` and read as None."""
    value = report.get(key)
    if value is None:
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(value, kinds) and not (number and not math.isfinite(value)) \
            and not (isinstance(value, bool) and bool not in kinds):
        return value
    bad.append(key)
    return None


@dataclass
class Heard:
    """What fleet reads of one station's retained status and health messages (agent/schemas:
    status.json, health.json, sent by stations it does not trust): each figure when it has the
    expected type, else None, and its name in `bad`."""
    state: str                       # online, offline, or unknown (absent or not one of those)
    reason: str | None
    status_at: str | None            # when the station came online or went offline
    version: str | None              # the status message's, else the health message's
    health_at: str | None
    faults: list[Any]
    fault_codes: list[Any]
    oldest_undelivered_age_s: float | None
    queue_depth: float | None
    clock_synced: bool | None
    bad: list[str]
    undeliverable: float | None = None   # health 1.3: of queue_depth, set aside (None: not said)

    @classmethod
    def read(cls, status: dict[str, Any], health: dict[str, Any]) -> Heard:
        bad: list[str] = []   # named in the order `fleet` has always named them
        state = _typed(status, "state", (str,), bad)
        reason = _typed(status, "reason", (str,), bad)
        faults = _typed(health, "faults", (list,), bad) or []
        codes = _typed(health, "fault_codes", (list,), bad) or []
        oldest = _typed(health, "oldest_undelivered_age_s", (int, float), bad)
        health_at = _typed(health, "at", (str,), bad)
        clock = _typed(health, "clock_synced", (bool,), bad)
        status_at = _typed(status, "at", (str,), bad)
        depth = _typed(health, "queue_depth", (int, float), bad)
        version = _typed(status, "version", (str,), bad) or _typed(health, "version", (str,), bad)
        aside = _typed(health, "undeliverable", (int, float), bad)
        return cls(state if state in ("online", "offline") else "unknown", reason, status_at, version, health_at,
                   faults, codes, oldest, depth, clock, bad, aside)


def collect(cfg: MqttConfig, *, wait_s: float = 2.0, connect_timeout_s: float = 10.0,
            subacks: list[str] | None = None) -> dict[str, Station]:
    """The retained status and health of every station under the prefix. Raises OSError / ssl
    errors / ConnectionError when the broker cannot be reached or refuses us. `subacks`, when
    given, receives the broker's answer to each subscription (a refusal says the ACL denies it)."""
    stations: dict[str, Station] = {}
    lock = threading.Lock()
    done = threading.Event()
    refused: list[str] = []
    # a client id of our own: a consumer or tool using a station's id would kick that station off
    client = make_client(cfg, f"scanner-agent-fleet-{secrets.token_hex(4)}")

    def on_connect(c, userdata, flags, rc, props):
        if rc.is_failure:
            refused.append(str(rc))
            done.set()
            return
        c.subscribe([(f"{cfg.topic_prefix}/+/status", 0), (f"{cfg.topic_prefix}/+/health", 0)])
        done.set()

    def on_message(c, userdata, msg):
        try:
            take(msg.topic, msg.payload)
        except Exception:  # noqa: BLE001 - paho's network thread must live: stations would be hidden
            pass

    def take(topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) < 2:
            return
        sid, kind = _text(parts[-2], 64), parts[-1]
        try:
            data = jsonbound.loads(payload, max_bytes=MAX_PAYLOAD, max_depth=MAX_NESTING)
        except (UnicodeDecodeError, ValueError):
            data = None
        value = data if isinstance(data, dict) else {"unreadable": True}
        with lock:
            st = stations.get(sid)
            if st is None:
                if len(stations) >= MAX_TRACKED:
                    return
                st = stations[sid] = Station(sid, cut=len(stations) >= MAX_STATIONS)
            if st.cut:   # only whether it is online: a few bytes a station
                if kind == "status":
                    state = value.get("state")
                    st.status = {"state": state if state in ("online", "offline") else "unknown"}
            elif kind == "status":
                st.status = value
            elif kind == "health":
                st.health = value

    def on_subscribe(c, userdata, mid, reason_codes, props):
        if subacks is not None:
            subacks.extend(str(rc) for rc in reason_codes)

    client.on_connect, client.on_message, client.on_subscribe = on_connect, on_message, on_subscribe
    client.connect(cfg.host, cfg.port, keepalive=max(cfg.keepalive_s, 10))
    client.loop_start()
    try:
        if not done.wait(connect_timeout_s):
            raise ConnectionError(f"no answer from the broker {cfg.host}:{cfg.port} in {connect_timeout_s:g} s")
        if refused:
            raise ConnectionError(f"the broker refused the connection: {_text(refused[0])}")
        time.sleep(wait_s)   # retained messages arrive right after the subscription
    finally:
        client.loop_stop()
        client.disconnect()
    with lock:
        return dict(stations)


@dataclass
class Row:
    station: str
    state: str
    since: str
    version: str
    queue: str
    oldest: str
    clock: str
    health_age: str
    faults: str
    level: int
    why: list[str]
    #: the figures behind the texts above, for --json: since_s, oldest_s, health_age_s, queue
    numbers: dict[str, float | int | None] = field(default_factory=dict)
    #: the one row that sums up the stations beyond MAX_STATIONS (no version or figures of its own)
    summary: bool = False


def assess(stations: dict[str, Station], *, health_interval_s: float = 60.0, warn_s: float = 300.0,
           crit_s: float = 1800.0, now: float | None = None, expect_version: str | None = None) -> list[Row]:
    """One row per station. expect_version: a station running another version (or not saying
    which) is a WARNING, e.g. the ones a rollout has not reached yet."""
    now = time.time() if now is None else now
    rows = []
    cut = sorted(sid for sid, st in stations.items() if st.cut)
    for sid in sorted(sid for sid, st in stations.items() if not st.cut):
        st = stations[sid]
        heard = Heard.read(st.status, st.health)
        state, level, why = heard.state, OK, []
        if state != "online":
            level = CRITICAL
            why.append(f"{state}" + (f" ({_text(heard.reason, 60)})" if heard.reason else ""))
        faults = heard.faults
        if faults and heard.fault_codes and all(c in WARNING_CODES for c in heard.fault_codes):
            level = max(level, WARNING)      # the LEDs still say everything: worth a look, not an alarm
            why.append(f"{len(faults)} warning(s)")
        elif faults:
            level = CRITICAL
            why.append(f"{len(faults)} fault(s)")
        oldest = heard.oldest_undelivered_age_s
        if oldest is not None and oldest > crit_s:
            level = CRITICAL
            why.append(f"queue older than {crit_s:g} s")
        elif oldest is not None and oldest > warn_s:
            level = max(level, WARNING)
            why.append(f"queue older than {warn_s:g} s")
        if heard.undeliverable is not None and heard.undeliverable > 0:   # never sent again by itself: IT exports and removes it (queue remove)
            level = max(level, WARNING)
            why.append(f"{heard.undeliverable:.0f} undeliverable")
        age = _age(heard.health_at, now)
        if state == "online" and (age is None or age > 3 * health_interval_s):
            level = max(level, WARNING)
            why.append("health stale" if age is not None else "no health report")
        if heard.clock_synced is False:
            level = max(level, WARNING)
            why.append("clock not synchronised")
        since, depth, version = _age(heard.status_at, now), heard.queue_depth, _text(heard.version, 20)
        if expect_version is not None and version != expect_version:
            level = max(level, WARNING)
            why.append(f"version {version}, expected {_text(expect_version, 20)}")
        if heard.bad:
            level = max(level, WARNING)
            why.append("unreadable " + ", ".join(dict.fromkeys(heard.bad)))
        rows.append(Row(sid, state, _duration(since), version,
                        "-" if depth is None else f"{depth:.0f}" + (f" ({heard.undeliverable:.0f} undeliverable)"
                                                                      if (heard.undeliverable or 0) > 0 else ""),
                        _duration(oldest),
                        {True: "synced", False: "NOT synced"}.get(heard.clock_synced, "-"), _duration(age),
                        "; ".join(_text(f, 80) for f in faults[:3]) or "-", level, why,
                        {"since_s": _round(since), "oldest_s": _round(oldest), "health_age_s": _round(age),
                         "queue": None if depth is None else int(depth),
                         "undeliverable": None if heard.undeliverable is None else int(heard.undeliverable)}))
    if cut:
        rows.append(_cut_row(cut, stations))
    return rows


def _cut_row(cut: list[str], stations: dict[str, Station]) -> Row:
    """The stations beyond MAX_STATIONS, in one row: never OK (they were not assessed), CRITICAL
    when one of them is not online."""
    down = [sid for sid in cut if stations[sid].status.get("state") != "online"]
    why = [f"{len(cut)} stations beyond the {MAX_STATIONS} shown, not assessed"
           + (f" (at most {MAX_TRACKED} are read)" if len(stations) >= MAX_TRACKED else "")]
    if down:
        why.append(f"{len(down)} not online: " + ", ".join(down[:10]) + (", ..." if len(down) > 10 else ""))
    return Row(f"(+{len(cut)} more, not shown)", f"{len(down)} not online", "-", "-", "-", "-", "-", "-", "-",
               CRITICAL if down else UNKNOWN, why,
               {"since_s": None, "oldest_s": None, "health_age_s": None, "queue": None, "undeliverable": None},
               summary=True)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


LEVELS = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}


def render(rows: list[Row]) -> str:
    head = ("station", "state", "since", "version", "queue", "oldest", "clock", "health", "check", "faults")
    cells = [head] + [(r.station, r.state, r.since, r.version, r.queue, r.oldest, r.clock, r.health_age,
                       LEVELS[r.level] + (f": {', '.join(r.why)}" if r.why else ""), r.faults) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head) - 1)]
    return "\n".join("  ".join(c[i].ljust(widths[i]) for i in range(len(head) - 1)) + "  " + c[-1] for c in cells)


def versions(rows: list[Row]) -> str | None:
    """A warning line when the stations run more than one version (a rollout under way, or a
    station it missed), most stations first; None when they all run the same one."""
    counts: dict[str, int] = {}
    for r in rows:
        if r.summary:   # the stations beyond MAX_STATIONS: no version of their own here
            continue
        counts[r.version] = counts.get(r.version, 0) + 1
    if len(counts) < 2:
        return None
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return (f"{len(counts)} versions in the fleet: " + ", ".join(f"{v} on {n}" for v, n in ranked)
            + f" (--expect-version {ranked[0][0]} marks the others WARNING)")


def overall(rows: list[Row]) -> int:
    return max((r.level for r in rows), key=SEVERITY.index, default=UNKNOWN)


def no_reports(cfg: MqttConfig, station_id: str | None, subacks: list[str]) -> str:
    """Why nothing arrived: the ACL, when the broker said so or the login is a station's (a station
    may not read other stations' topics), else no station has reported, or the ACL."""
    topic = f"{cfg.topic_prefix}/+/status"
    who = cfg.username or "(anonymous)"
    if any(not rc.startswith("Granted") for rc in subacks[:1]):
        return f"this user ({who}) may not read {topic}: see the ACL (the broker refused the subscription)"
    if cfg.username and cfg.username == station_id:
        return (f"this user ({who}) may not read {topic}: see the ACL. It is station {station_id}'s own login, "
                "which may read only its own verdicts; run fleet with IT's login (examples/fleet.toml, user 'it')")
    return (f"no station has reported on this broker, or this user ({who}) may not read {topic}: see the ACL "
            "(examples/mosquitto/acl, user 'it')")


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def as_json(rows: list[Row]) -> str:
    """One object per station; durations in seconds and the queue as numbers (null when unknown)."""
    out = []
    for r in rows:
        item = {k: v for k, v in vars(r).items() if k not in ("since", "oldest", "health_age", "numbers", "summary")}
        out.append({**item, **r.numbers, "check": LEVELS[r.level]})
    return json.dumps(out, ensure_ascii=False)


class BrokerUnreachable(Exception):
    """The fleet cannot be read: the broker does not answer or refuses us (exit UNKNOWN)."""


def watch(cfg: Config, *, json_out: bool, refresh: bool, every: float, wait_s: float, warn_s: float,
          crit_s: float, expect_version: str | None) -> int:
    """Read and show the fleet once (or every `every` seconds while `refresh`); its overall level.
    BrokerUnreachable when the broker cannot be read."""
    if cfg.mqtt is None:
        print("fleet: the config has no [mqtt] section (the broker to read the fleet from)", file=sys.stderr)
        return UNKNOWN
    while True:
        subacks: list[str] = []
        try:
            stations = collect(cfg.mqtt, wait_s=wait_s, subacks=subacks)
        except (OSError, ssl.SSLError, ConnectionError, ValueError) as exc:
            raise BrokerUnreachable(f"UNKNOWN: broker {cfg.mqtt.host}:{cfg.mqtt.port}: "
                                    f"{describe(exc, cfg.mqtt.tls, f'{cfg.mqtt.host}:{cfg.mqtt.port}')}") from None
        rows = assess(stations, health_interval_s=cfg.mqtt.health_interval_s, warn_s=warn_s, crit_s=crit_s,
                      expect_version=expect_version)
        status = overall(rows)
        if json_out:
            print(as_json(rows), flush=True)
        else:
            if refresh:
                print("\033[2J\033[H", end="")
            print(render(rows) if rows else no_reports(cfg.mqtt, cfg.station.id, subacks))
            mixed = versions(rows)
            if mixed:
                print(f"note: {mixed}")
            counts = {name: sum(r.level == lvl for r in rows) for lvl, name in LEVELS.items() if lvl != UNKNOWN}
            print(f"{LEVELS[status]}: {len(rows)} station(s); " + ", ".join(f"{n} {k.lower()}" for k, n in counts.items()),
                  flush=True)
        if not refresh:
            return status
        time.sleep(max(1.0, every))
