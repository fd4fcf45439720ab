"""The MQTT payloads apart from the connection (agent/mqtt/messages.py): replies read from hostile
bytes into a Verdict or a receipt's ids, and the rate limit on ignored replies, on a fake clock.
tests/test_mqtt.py and tests/test_mqtt_replies.py send the same through a real Mosquitto."""

import json

import pytest

from agent.mqtt.messages import IgnoredNotices, Verdict, ignored_notice, read_reply, status_payload
from agent.mqtt.schemas import errors as schema_errors

ID = "019ab1c2-7d3e-7f00-8a1b-2c3d4e5f6a7b"


def test_a_verdict_is_read_typed_and_cleaned():
    raw = {"id": ID, "result": "rejected", "code": "070", "message": "Sai\x1b[2J ngày\nsinh" + "x" * 300,
           "extra": 1}
    v = read_reply("verdict", json.dumps(raw, ensure_ascii=False).encode())
    assert isinstance(v, Verdict) and (v.id, v.result, v.code, v.accepted) == (ID, "rejected", "070", False)
    assert "\x1b" not in v.message and "\n" not in v.message and len(v.message) <= 200
    assert read_reply("verdict", json.dumps({"id": ID, "result": "accepted"}).encode()) == Verdict(ID, "accepted")
    assert read_reply("receipt", json.dumps({"ids": [ID, ID]}).encode()) == [ID, ID]


@pytest.mark.parametrize("payload", [b"", b"\xff\xfe", b"not json", b"[]", b"null", b'{"id": 5}', b"[" * 2000,
                                     b"x" * 100_000, json.dumps({"id": ID, "result": "maybe"}).encode()])
def test_a_malformed_reply_is_a_value_error_never_a_crash(payload):
    with pytest.raises(ValueError):
        read_reply("verdict", payload)


def test_ignored_replies_log_a_line_a_minute_and_publish_at_most_30_a_minute():
    now = [0.0]
    n = IgnoredNotices(clock=lambda: now[0])
    assert n.log_now("malformed verdict") == 1             # the first is logged at once
    assert [n.log_now("stale verdict") for _ in range(5)] == [None] * 5
    assert n.summary() is None                             # not a minute yet
    now[0] = 60.0
    assert n.summary() == (5, 60.0, "stale verdict")       # on the timer, not on the next message
    assert n.summary(force=True) is None                   # nothing left to sum up
    assert sum(n.may_publish() for _ in range(40)) == 30
    now[0] = 120.0
    assert n.may_publish()


def test_payloads_match_their_schemas():
    assert schema_errors("status", status_payload("offline", "counter-01", "connection lost", since=0.0)) == []
    assert schema_errors("ignored", ignored_notice("counter-01", "verdict", None, "malformed", "bad\njson")) == []


def test_a_deeply_nested_verdict_is_refused_before_parsing(tmp_path):
    """Replies from the broker are bounded in nesting before json parses them (the rule the fleet
    view and the consumer follow since issue 21), not left to Python's recursion limit."""
    from types import SimpleNamespace

    from agent.config import MqttConfig
    from agent.mqtt.link import MqttLink
    from agent.outbox import Outbox

    box = Outbox(tmp_path / "outbox.db", station="s", max_events=100, min_free_mb=0)
    link = MqttLink(MqttConfig(host="127.0.0.1", port=9, tls=False, allow_insecure=True), "s", box)
    said: list[tuple] = []
    link._ignore = lambda *a: said.append(a)
    try:
        link._on_message(None, None, SimpleNamespace(topic=link.topics["verdict"], payload=b"[" * 2000,
                                                     retain=False))
    finally:
        box.close()
    assert len(said) == 1 and said[0][2] == "malformed" and "nested" in said[0][3], said
