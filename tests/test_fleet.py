"""`scanner-agent fleet` against a real Mosquitto holding retained status and health reports:
online, stale, offline and faulty stations, hostile payloads, exit codes for monitoring."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from support.broker import Broker, Subscriber
from support.daemon import cli


def iso(seconds_ago: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)).isoformat(timespec="milliseconds")


def status(sid: str, state: str = "online", ago: float = 60) -> dict:
    return {"state": state, "station": sid, "at": iso(ago), "version": "0.4.0"}


def health(sid: str, ago: float = 5, faults=(), oldest=None, synced=True, depth=0) -> dict:
    return {"station": sid, "at": iso(ago), "version": "0.4.0", "uptime_s": 100, "queue_depth": depth,
            "oldest_undelivered_age_s": oldest, "delivered_total": 3, "failed_total": 0,
            "clock_synced": synced, "faults": list(faults)}


def publish(broker: Broker, reports: dict[str, bytes | dict]) -> None:
    pub = Subscriber(broker.port, "nothing/#", client_id="publisher")
    try:
        for topic, payload in reports.items():
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            pub.client.publish(f"hospital/checkin/{topic}", data, qos=1, retain=True).wait_for_publish(5)
    finally:
        pub.close()


def conf(tmp_path, port: int):
    c = tmp_path / "fleet.toml"
    c.write_text(f'[station]\nstate_dir = "{tmp_path / "state"}"\n[mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
                 'tls = false\nallow_insecure = true\nhealth_interval_s = 10\n')
    return c


def test_fleet_all_well_is_exit_0(tmp_path, broker):
    publish(broker, {"counter-01/status": status("counter-01"), "counter-01/health": health("counter-01"),
                     "counter-02/status": status("counter-02"), "counter-02/health": health("counter-02")})
    out = cli("fleet", "-c", str(conf(tmp_path, broker.port)), "--wait", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "counter-01" in out.stdout and "counter-02" in out.stdout and out.stdout.strip().endswith("0 critical")


def test_fleet_stale_warning_offline_and_faulty_critical(tmp_path, broker):
    publish(broker, {
        "ok-1/status": status("ok-1"), "ok-1/health": health("ok-1"),
        "stale-1/status": status("stale-1"), "stale-1/health": health("stale-1", ago=120),      # > 3 x 10 s
        "old-queue/status": status("old-queue"), "old-queue/health": health("old-queue", oldest=900, depth=12),
    })
    path = conf(tmp_path, broker.port)
    warned = cli("fleet", "-c", str(path), "--wait", "1")
    assert warned.returncode == 1, warned.stdout
    line = next(x for x in warned.stdout.splitlines() if x.startswith("stale-1"))
    assert "WARNING: health stale" in line
    assert "queue older than 300 s" in next(x for x in warned.stdout.splitlines() if x.startswith("old-queue"))
    publish(broker, {"gone-1/status": {**status("gone-1", "offline"), "reason": "connection lost"},
                     "faulty-1/status": status("faulty-1"),
                     "faulty-1/health": health("faulty-1", faults=["camera: no frames for 30 s"])})
    crit = cli("fleet", "-c", str(path), "--wait", "1", "--json")
    assert crit.returncode == 2
    rows = {r["station"]: r for r in json.loads(crit.stdout)}
    assert rows["gone-1"]["check"] == "CRITICAL" and "offline (connection lost)" in rows["gone-1"]["why"]
    assert rows["faulty-1"]["check"] == "CRITICAL" and "camera: no frames" in rows["faulty-1"]["faults"]
    assert rows["ok-1"]["check"] == "OK" and rows["stale-1"]["check"] == "WARNING"


def test_fleet_hostile_payloads_are_cleaned_never_a_traceback(tmp_path, broker):
    publish(broker, {
        "evil\u202e1/status": {**status("evil"), "version": "\x1b]0;owned\x07" + "v" * 500},
        "evil\u202e1/health": {**health("evil"), "faults": ["\u202eforged\nINFO line", 5]},
        "junk/status": b"\xff\xfe not json",
        "junk/health": b"[1, 2, 3]",
        "huge/status": b"{" + b" " * 20_000 + b"}",
    })
    out = cli("fleet", "-c", str(conf(tmp_path, broker.port)), "--wait", "1")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "\x1b" not in out.stdout and "\u202e" not in out.stdout and "\x07" not in out.stdout
    assert "junk" in out.stdout and "unknown" in out.stdout
    assert all(len(line) < 600 for line in out.stdout.splitlines())


def test_fleet_unreachable_broker_is_unknown(tmp_path):
    out = cli("fleet", "-c", str(conf(tmp_path, 9)), "--wait", "0.2")
    assert out.returncode == 3 and out.stderr.startswith("UNKNOWN: broker 127.0.0.1:9") and "Traceback" not in out.stderr


def test_fleet_json_numbers_are_numbers_and_help_shows_the_defaults(tmp_path, broker):
    publish(broker, {"counter-01/status": status("counter-01", ago=56),
                     "counter-01/health": health("counter-01", ago=5, oldest=90.5, depth=3)})
    out = cli("fleet", "-c", str(conf(tmp_path, broker.port)), "--wait", "1", "--json")
    (row,) = json.loads(out.stdout)
    assert row["queue"] == 3 and 50 <= row["since_s"] <= 70 and row["oldest_s"] == 90.5
    assert isinstance(row["health_age_s"], float) and 0 <= row["health_age_s"] < 30
    assert not any(isinstance(v, str) and v.endswith(" s") for v in row.values()), row
    helped = cli("fleet", "--help").stdout
    assert "default 300" in helped and "default 1800" in helped, helped


@pytest.mark.slow   # the sample broker with TLS, and three fleet runs
def test_fleet_for_it_uses_the_example_fleet_toml_and_names_a_login_that_may_not_read(tmp_path):
    """examples/fleet.toml as IT's user 'it' of the sample ACL sees the station; run with the
    station's own config (the default on a station), the ACL lets it read no status topic: fleet
    says so instead of 'no station has reported'."""
    from support.broker import SampleBroker

    root = Path(__file__).resolve().parents[1]
    broker = SampleBroker(tmp_path / "sample", ["counter-01"])
    try:
        station = broker.station_config(tmp_path / "st", "counter-01", broker.passwords["counter-01"])
        pub = Subscriber(broker.port, "hospital/checkin/counter-01/verdict", client_id="counter-01",
                         tls_ca=broker.ca["ca"], auth=("counter-01", broker.passwords["counter-01"]))
        try:
            for kind, payload in (("status", status("counter-01")), ("health", health("counter-01"))):
                pub.client.publish(f"hospital/checkin/counter-01/{kind}", json.dumps(payload), qos=1,
                                   retain=True).wait_for_publish(5)
        finally:
            pub.close()
        fleet_toml = (root / "examples" / "fleet.toml").read_text()
        for old, new in (('"broker.hospital.lan"', '"localhost"'), ("port = 8883", f"port = {broker.port}"),
                         ('"/etc/scanner-agent/ca.crt"', f'"{broker.ca["ca"]}"'),
                         ('password = ""', f'password = "{broker.passwords["it"]}"')):
            assert old in fleet_toml
            fleet_toml = fleet_toml.replace(old, new)
        (tmp_path / "fleet.toml").write_text(fleet_toml)
        it = cli("fleet", "-c", str(tmp_path / "fleet.toml"), "--wait", "1")
        assert it.returncode == 0 and "counter-01" in it.stdout, it.stdout + it.stderr
        own = cli("fleet", "-c", str(station), "--wait", "1")
        assert own.returncode == 3, own.stdout + own.stderr
        assert "this user (counter-01) may not read hospital/checkin/+/status: see the ACL" in own.stdout, own.stdout
        assert "no station has reported" not in own.stdout
    finally:
        broker.stop()


def test_fleet_version_column_mixed_versions_and_expect_version(tmp_path, broker):
    """A rollout half done: a note names both versions (exit unchanged); --expect-version makes the
    stations it has not reached (and one that does not say) a WARNING."""
    publish(broker, {
        "new-1/status": status("new-1"), "new-1/health": health("new-1"),
        "new-2/status": status("new-2"), "new-2/health": health("new-2"),
        "old-1/status": {**status("old-1"), "version": "0.3.9"}, "old-1/health": {**health("old-1"), "version": "0.3.9"},
    })
    path = conf(tmp_path, broker.port)
    mixed = cli("fleet", "-c", str(path), "--wait", "1")
    assert mixed.returncode == 0, mixed.stdout + mixed.stderr
    assert mixed.stdout.splitlines()[0].split()[3] == "version"
    assert "note: 2 versions in the fleet: 0.4.0 on 2, 0.3.9 on 1 (--expect-version 0.4.0" in mixed.stdout
    expected = cli("fleet", "-c", str(path), "--wait", "1", "--expect-version", "0.4.0", "--json")
    assert expected.returncode == 1, expected.stdout
    rows = {r["station"]: r for r in json.loads(expected.stdout)}
    assert rows["old-1"]["check"] == "WARNING" and rows["old-1"]["version"] == "0.3.9"
    assert "version 0.3.9, expected 0.4.0" in rows["old-1"]["why"]
    assert rows["new-1"]["check"] == rows["new-2"]["check"] == "OK"
    publish(broker, {"old-1/status": status("old-1"), "old-1/health": health("old-1")})   # upgraded
    same = cli("fleet", "-c", str(path), "--wait", "1", "--expect-version", "0.4.0")
    assert same.returncode == 0 and "note:" not in same.stdout, same.stdout


def test_status_and_health_carry_the_program_version():
    import jsonschema

    from agent import __version__
    from agent.mqtt.messages import health_payload
    from agent.outbox import OutboxStats

    report = health_payload("counter-01", OutboxStats.unreadable("no outbox yet"), uptime_s=1.0,
                            delivered_on="broker")
    assert report["version"] == __version__
    schema = json.loads((Path(__file__).resolve().parents[1] / "agent/schemas/health.json").read_text())
    jsonschema.validate(report, schema)
    assert "Debian package" in schema["properties"]["version"]["description"]


def test_fleet_type_checks_every_field_and_never_calls_nan_ok(tmp_path, broker):
    """`"clock_synced": []` was a traceback and exit 1 (read as WARNING); a NaN age was OK. Every
    field of the wrong type is named, and the station is at least a warning."""
    publish(broker, {
        "lists/status": {**status("lists"), "state": ["online"], "reason": {"x": 1}, "at": [1], "version": {}},
        "lists/health": {**health("lists"), "clock_synced": [], "faults": {"a": 1}, "at": {},
                         "queue_depth": "12", "oldest_undelivered_age_s": [3]},
        "nan-age/status": status("nan-age"),
        "nan-age/health": b'{"station": "nan-age", "at": "' + iso(5).encode() + b'", "version": "0.4.0", '
                          b'"uptime_s": 1, "queue_depth": NaN, "oldest_undelivered_age_s": NaN, '
                          b'"delivered_total": 0, "failed_total": 0, "clock_synced": true, "faults": []}',
        "inf-age/status": status("inf-age"),
        "inf-age/health": b'{"station": "inf-age", "at": "' + iso(5).encode() + b'", "version": "0.4.0", '
                          b'"uptime_s": 1, "queue_depth": 0, "oldest_undelivered_age_s": Infinity, '
                          b'"delivered_total": 0, "failed_total": 0, "clock_synced": true, "faults": []}',
        "fine/status": status("fine"), "fine/health": health("fine"),
    })
    out = cli("fleet", "-c", str(conf(tmp_path, broker.port)), "--wait", "1", "--json")
    assert "Traceback" not in out.stderr, out.stderr
    rows = {r["station"]: r for r in json.loads(out.stdout)}
    assert rows["fine"]["check"] == "OK"
    assert rows["nan-age"]["check"] != "OK" and "oldest_undelivered_age_s" in " ".join(rows["nan-age"]["why"])
    assert rows["inf-age"]["check"] != "OK"
    assert rows["lists"]["check"] == "CRITICAL"                     # state unreadable: not known online
    why = " ".join(rows["lists"]["why"])
    assert all(k in why for k in ("clock_synced", "faults", "queue_depth", "oldest_undelivered_age_s"))
    assert out.returncode == 2


def test_fleet_deep_nesting_is_refused_before_parsing_and_hides_no_station(tmp_path, broker):
    """One retained status of 16,000 '[' killed paho's network thread: the view then showed 1 of 4
    stations. Now it is refused unparsed, the station shown as unreadable, the others all there."""
    publish(broker, {"a-1/status": status("a-1"), "a-1/health": health("a-1"),
                     "deep/status": b"[" * 16_000,
                     "deep/health": b'{"faults": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
                     "b-2/status": status("b-2"), "b-2/health": health("b-2"),
                     "c-3/status": status("c-3"), "c-3/health": health("c-3")})
    out = cli("fleet", "-c", str(conf(tmp_path, broker.port)), "--wait", "1", "--json")
    assert "Traceback" not in out.stderr and "RecursionError" not in out.stderr, out.stderr
    rows = {r["station"]: r for r in json.loads(out.stdout)}
    assert set(rows) == {"a-1", "deep", "b-2", "c-3"}
    assert rows["deep"]["check"] == "CRITICAL" and rows["a-1"]["check"] == "OK"


@pytest.mark.slow
def test_fleet_more_stations_than_shown_is_said_and_an_offline_one_is_still_critical(tmp_path, broker):
    """2,100 stations, one of them (among the last to arrive) offline: the cut was silent and the
    check said WARNING. Now the cut is a row of its own (UNKNOWN) and the offline one makes it
    CRITICAL."""
    reports: dict[str, bytes | dict] = {}
    for i in range(2_100):
        sid = f"st-{i:04d}"
        reports[f"{sid}/status"] = status(sid, "offline" if i == 2_090 else "online")
        reports[f"{sid}/health"] = health(sid)
    publish(broker, reports)
    out = cli("fleet", "-c", str(conf(tmp_path, broker.port)), "--wait", "3", "--json")
    rows = json.loads(out.stdout)
    cut = [r for r in rows if r["station"].startswith("(")]
    assert cut and "100" in cut[0]["station"], [r["station"] for r in rows[-3:]]
    assert "st-2090" in " ".join(cut[0]["why"]) and cut[0]["check"] == "CRITICAL"
    assert out.returncode == 2
    # without the offline one: the cut alone is UNKNOWN, never OK
    publish(broker, {"st-2090/status": status("st-2090")})
    out = cli("fleet", "-c", str(conf(tmp_path, broker.port)), "--wait", "3")
    assert out.returncode == 3 and "not shown" in out.stdout, out.stdout[-500:]


def test_fleet_summary_row_of_the_cut_stations_is_not_a_version(monkeypatch):
    """Beyond MAX_STATIONS the rest is one row (issue 21 B) whose version is '-': the version note
    (issue 26) must not count it as a second version of a fleet that runs one."""
    from datetime import datetime, timezone

    from agent.admin import fleet

    monkeypatch.setattr(fleet, "MAX_STATIONS", 2)
    at = datetime.now(timezone.utc).isoformat()
    stations = {}
    for i in range(3):
        sid = f"st-{i}"
        stations[sid] = fleet.Station(sid, cut=i >= fleet.MAX_STATIONS)
        stations[sid].status = {"state": "online", "at": at, "version": "0.4.0"}
        if i < fleet.MAX_STATIONS:
            stations[sid].health = {"at": at, "version": "0.4.0", "queue_depth": 0, "clock_synced": True}
        else:
            stations[sid].status = {"state": "online"}
    rows = fleet.assess(stations)
    assert len(rows) == 3 and rows[-1].station.startswith("(+1")
    assert fleet.versions(rows) is None
    # --json: the figures are numbers or null in every row, the summary row's too
    cut = json.loads(fleet.as_json(rows))[-1]
    assert cut["queue"] is None and cut["since_s"] is None and cut["check"] == "UNKNOWN", cut
    stations["st-1"].status["version"] = "0.3.9"
    assert fleet.versions(fleet.assess(stations)).startswith("2 versions in the fleet: 0.3.9 on 1, 0.4.0 on 1")


def test_fleet_names_a_station_with_an_undeliverable_check_in_as_a_warning(tmp_path, broker):
    """Issue 32: a check-in set aside as undeliverable (health 1.3 `undeliverable`) needs IT's hand
    (`queue remove ID --export FILE` on the station): a WARNING with the count, in the queue column
    and in --json. A station that does not say (health 1.2) is as before."""
    publish(broker, {"aside/status": status("aside"), "aside/health": {**health("aside", depth=3), "undeliverable": 1},
                     "old/status": status("old"), "old/health": health("old")})
    out = cli("fleet", "-c", str(conf(tmp_path, broker.port)), "--wait", "1")
    assert out.returncode == 1, out.stdout + out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("aside"))
    assert "3 (1 undeliverable)" in row and "WARNING: 1 undeliverable" in row, out.stdout
    assert "OK" in next(line for line in out.stdout.splitlines() if line.startswith("old"))
    rows = {r["station"]: r for r in json.loads(cli("fleet", "-c", str(conf(tmp_path, broker.port)), "--wait", "1",
                                                    "--json").stdout)}
    assert rows["aside"]["undeliverable"] == 1 and rows["old"]["undeliverable"] is None
