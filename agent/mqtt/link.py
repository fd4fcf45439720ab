"""The station's MQTT link to the hospital broker (paho-mqtt 2.x, MQTT 5): the connection, its
worker thread and paho's callbacks. What they mean is decided elsewhere:

- agent/mqtt/delivery.py: the send window and when a check-in counts as delivered (on the
  broker's PUBACK, or on the hospital's receipt), and the rules for the hospital's replies;
- agent/mqtt/messages.py: topics and payloads (status, will, health, ignored), replies read;
- agent/mqtt/session.py: the client, TLS, credentials, and a failure in one line for IT.

Publishing is driven from the outbox by this link's own thread, never from the scan path.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent import failpoints
from agent.cards.sanitize import one_line
from agent.config import MqttConfig
from agent.faults import Fault
from agent.mqtt.delivery import NOBODY, RESCAN_EVERY_S, SIZE_CLOSES, Delivery
from agent.mqtt.messages import (NOTICE_EVERY_S, IgnoredNotices, Verdict, health_payload, ignored_notice,
                                 read_reply, status_payload, topics)
from agent.mqtt.session import LOGIN_REFUSED, connect_properties, describe, make_client, max_payload, require_tls
from agent.outbox import Outbox
from agent.status_types import MqttStatus
from agent.worker import Worker, backoff

log = logging.getLogger(__name__)

NO_MATCHING_SUBSCRIBERS = 0x10   # MQTT 5 PUBACK reason code: accepted, but nobody subscribed
SESSION_TAKEN_OVER = 0x8E     # MQTT 5 DISCONNECT reason: another client connected with our id
SHORT_SESSION_S = 30.0       # connections closed sooner than this, 3 in a row: say what it may be


@dataclass
class LinkState:
    connected: bool = False
    last_error: str | None = None
    failed_attempts: int = 0          # connection attempts since the last successful one
    connected_since: float | None = None
    failed_total: int = 0             # publishes the broker refused
    delivered_session: int = 0
    next_retry_at: float | None = None
    history: list[float] = field(default_factory=list)  # connection attempt times (last 20)
    login_refused: str | None = None  # the broker's reason while it refuses our login: a fault
    subscribed: bool = False          # the last connection's SUBACK granted the replies (read with connected)


class MqttLink(Worker):
    """Owns the MQTT connection. start() runs it in a supervised background thread; stop() ends
    cleanly (publishes 'offline'). A crash of the thread (an outbox error, say) drops the
    connection, shows as a fault and restarts it: unacknowledged rows are sent again. `clock`
    (monotonic seconds) drives its timers and the delivery's; the intervals are injectable so
    tests need not wait a minute for a summary or five seconds for a rescan."""

    stall_s = 150.0   # beats every 50 ms while connected; a connect() hangs at most a TCP timeout

    def __init__(self, cfg: MqttConfig, station: str, outbox: Outbox, *,
                 on_verdict: Callable[[Verdict], None] | None = None,
                 faults: Callable[[], list[Fault]] = lambda: [],
                 camera_fallback: Callable[[], str | None] = lambda: None,
                 chip_reader: Callable[[], dict[str, Any] | None] = lambda: None,
                 backoff: tuple[float, float] = (1.0, 120.0), window: int = 32,
                 started_at: float | None = None, clock: Callable[[], float] = time.monotonic,
                 notice_every_s: float = NOTICE_EVERY_S, rescan_every_s: float = RESCAN_EVERY_S):
        super().__init__("mqtt-link")
        require_tls(cfg)
        self.cfg, self.station, self.outbox = cfg, station, outbox
        self.on_verdict, self.faults, self.camera_fallback = on_verdict, faults, camera_fallback
        self.chip_reader = chip_reader
        self.backoff_min, self.backoff_max = backoff
        self.topics = topics(cfg.topic_prefix, station)
        self.state = LinkState()
        self.started_at = started_at or time.time()
        self.clock = clock
        self.delivery = Delivery.for_config(cfg, outbox, window=window, backoff_s=backoff,
                                            rescan_every_s=rescan_every_s, clock=clock)
        self.notices = IgnoredNotices(log_every_s=notice_every_s, clock=clock)
        self._next_health = 0.0
        self._short_sessions = 0
        self._session_started = time.time()
        self._closed: str | None = None   # why the connection last closed (the DISCONNECT reason)
        self.client = self._make_client()
        if not cfg.tls:
            log.warning("MQTT to %s:%d WITHOUT TLS (allow_insecure = true): patients' data crosses the "
                        "network in clear; use this for a test broker only", cfg.host, cfg.port)

    # -- setup -----------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        c = make_client(self.cfg, self.station)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        return c

    def _arm_will(self) -> None:
        """Before every connect: the broker publishes this when the connection is lost. It cannot
        know when that will be, so `since` says when this connection began: the station was online
        from then until the broker noticed (its last health report narrows it)."""
        self._session_started = time.time()
        will = status_payload("offline", self.station, "connection lost", since=self._session_started)
        self.client.will_set(self.topics["status"], json.dumps(will), qos=1, retain=True)

    # -- lifecycle -------------------------------------------------------------------------

    def work(self) -> None:
        attempt = 0
        try:
            while not self.stopping.is_set():
                self.state.history = (self.state.history + [time.time()])[-20:]
                try:
                    self._arm_will()
                    self.client.connect(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s,
                                        clean_start=False, properties=connect_properties())
                except Exception as exc:  # noqa: BLE001 - every failure to connect is retried
                    self._failed(describe(exc, self.cfg.tls, f"{self.cfg.host}:{self.cfg.port}"))
                else:
                    self._serve()
                    if self.stopping.is_set():
                        return  # still connected: finish() says goodbye properly
                    if self.state.connected_since:  # a session was established: start backoff afresh
                        attempt = 0
                    self._went_down()
                if self.stopping.is_set():
                    return
                wait = backoff(attempt, self.backoff_min, self.backoff_max)
                attempt += 1
                self.state.next_retry_at = time.time() + wait
                log.warning("MQTT %s:%d unreachable (%s); retry %d in %.1f s", self.cfg.host, self.cfg.port,
                            self.state.last_error, self.state.failed_attempts, wait)
                self.wait(wait)
        except BaseException:
            self._drop()  # the supervisor restarts work(): start from a clean connection
            raise

    def finish(self) -> None:
        self._shutdown()
        self._sum_up_ignored(force=True)

    def _drop(self) -> None:
        self.delivery.drop()
        self.state.connected = False
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001
            pass

    def _serve(self) -> None:
        """Network loop for one connection: returns when it drops or stop() is called."""
        while not self.stopping.is_set():
            self.beat()
            rc = self.client.loop(timeout=0.05)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                if not self.state.last_error or self.state.connected:
                    self.state.last_error = one_line(f"connection lost ({mqtt.error_string(rc)})")
                return
            if self.state.connected:
                self._pump()

    def _shutdown(self) -> None:
        if self.state.connected:
            self._flush_acks()
            info = self.client.publish(self.topics["status"],
                                       json.dumps(status_payload("offline", self.station, "shutdown")),
                                       qos=1, retain=True)
            deadline = time.time() + 1.5
            while not info.is_published() and time.time() < deadline:
                self.client.loop(timeout=0.05)
            self._flush_acks()
            self.client.disconnect()
            self.client.loop(timeout=0.05)
        self.state.connected = False

    def _failed(self, reason: str) -> None:
        self.state.last_error = reason
        self.state.failed_attempts += 1
        self.state.connected = False

    def _went_down(self) -> None:
        self.state.delivered_session += self.delivery.went_down(self._closed)
        self.state.connected = False
        if self._closed in SIZE_CLOSES:
            # paho would send its unacknowledged messages again first on the next connection, the
            # one the broker closed it on among them: a fresh client sends only what the delivery
            # sends (the outbox's rows, less any set aside); nothing is lost, the outbox has them all
            self.client = self._make_client()

    # -- callbacks (run inside client.loop, on the link thread) -----------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._failed(one_line(f"broker refused the connection: {reason_code}"))
            if str(reason_code) in LOGIN_REFUSED:
                self.state.login_refused = one_line(str(reason_code), 80)
                log.error("MQTT: %s. Check [mqtt] username/password and the broker's ACL.", reason_code)
            return
        self.state = LinkState(connected=True, connected_since=time.time(), failed_total=self.state.failed_total,
                               history=self.state.history)
        self._closed = None
        self.delivery.connected(max_payload(self.topics["checkin"], getattr(properties, "MaximumPacketSize", None)))
        self._next_health = 0.0
        log.info("MQTT connected to %s:%d (session %s)", self.cfg.host, self.cfg.port,
                 "resumed" if flags.session_present else "new")
        client.publish(self.topics["status"],
                       json.dumps(status_payload("online", self.station, since=self._session_started)),
                       qos=1, retain=True)
        # retain-as-published: a verdict published with retain = true is seen as such even while we
        # are subscribed (the broker would otherwise clear the flag), so it is never shown
        opts = SubscribeOptions(qos=1, retainAsPublished=True)
        client.subscribe([(self.topics[name], opts) for name in self.delivery.rule.replies])

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._closed = str(reason_code)
        if self.state.connected and not self.stopping.is_set():  # our own goodbye is no error
            self.state.last_error = one_line(f"disconnected: {reason_code}")
            lasted = time.time() - (self.state.connected_since or time.time())
            self._short_sessions = self._short_sessions + 1 if lasted < SHORT_SESSION_S else 0
            if self._closed in SIZE_CLOSES:   # not another client: a packet the broker would not take
                self._short_sessions = 0
                self.state.last_error = one_line(f"disconnected: {reason_code} (a check-in larger than the broker "
                                                 "takes? it is set aside if this happens again)")
                log.warning("MQTT %s", self.state.last_error)
            elif getattr(reason_code, "value", None) == SESSION_TAKEN_OVER or self._short_sessions >= 3:
                # MQTT 5 says so (0x8E), or the broker keeps closing fresh connections: the usual
                # cause is a second client using our id, each connect kicking the other off
                self.state.last_error = (f"the broker keeps closing this station's connection soon after it "
                                         f"is made ({reason_code}): is another MQTT client (a consumer, a "
                                         f"second station) using the client id {self.station!r}?")
                log.error("MQTT: %s", self.state.last_error)
            else:
                log.warning("MQTT %s", self.state.last_error)
        self.state.connected = False

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self.state.subscribed = not any(rc.is_failure for rc in reason_codes)
        for rc in reason_codes:
            if rc.is_failure:
                log.error("MQTT: subscribing to %s refused: %s (verdicts%s will not arrive; check the "
                          "broker's ACL)", self.topics["verdict"], rc,
                          " and receipts" if "receipt" in self.delivery.rule.replies else "")

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        nobody = getattr(reason_code, "value", None) == NO_MATCHING_SUBSCRIBERS
        setback = self.delivery.puback(mid, str(reason_code) if reason_code.is_failure else None, nobody)
        if setback is None:
            return
        if setback.refused is None:
            if self.state.last_error != NOBODY:
                log.warning("MQTT: %s; check-ins stay queued and are sent again", NOBODY)
            self.state.last_error = NOBODY
            return
        self.state.failed_total += 1
        self.state.last_error = one_line(f"broker refused a check-in on {self.topics['checkin']}: {setback.refused}")
        log.error("MQTT: %s; check-ins stay queued, retry in %.1f s", self.state.last_error, setback.pause_s)

    def _on_message(self, client, userdata, msg) -> None:
        """A verdict or a receipt from the hospital. Untrusted: anything the station does not act
        on is logged (a line a minute at most) and reported on the `ignored` topic with the reason."""
        kind = "receipt" if msg.topic == self.topics["receipt"] else "verdict"
        try:
            reply = read_reply(kind, msg.payload)
        except Exception as exc:  # noqa: BLE001 - a bad message must never reach the scan loop
            self._ignore(kind, None, "malformed", str(exc)[:200])
            return
        if isinstance(reply, Verdict):
            self._verdict(reply, msg.retain)
            return
        delivered, unknown = self.delivery.receipt(reply)
        self.state.delivered_session += delivered
        for event_id in unknown:
            self._ignore("receipt", event_id, "unknown", "not awaiting a receipt: not published by this "
                         "station since it connected; not counted as delivered")

    def _verdict(self, verdict: Verdict, retained: bool) -> None:
        """Shown once per check-in, only while the patient may still be at the counter."""
        delivered, refusal = self.delivery.verdict(verdict, retained)
        self.state.delivered_session += delivered
        if refusal:
            self._ignore("verdict", verdict.id, *refusal)
        elif self.on_verdict:
            self.on_verdict(verdict)

    def _ignore(self, kind: str, event_id: str | None, reason: str, detail: str) -> None:
        """Log (rate-limited) and tell the hospital, on the `ignored` topic, what was not acted on."""
        count = self.notices.log_now(f"{reason} {kind}")
        if count is not None:
            log.warning("MQTT: ignored a %s %s (%s: %s; %d ignored since the last such line)", reason, kind,
                        event_id or "no id", one_line(detail, 200), count)
        if self.state.connected and self.notices.may_publish():
            notice = ignored_notice(self.station, kind, event_id, reason, detail)
            self.client.publish(self.topics["ignored"], json.dumps(notice), qos=1)

    # -- sending ---------------------------------------------------------------------------

    def _sum_up_ignored(self, force: bool = False) -> None:
        """On a timer, not on the next ignored message: the count of a flood that stopped is written
        a minute after its first line at most."""
        if (summary := self.notices.summary(force)) is not None:
            log.warning("MQTT: %d more verdicts/receipts ignored in the last %.0f s (the last: %s)", *summary)

    def _pump(self) -> None:
        failpoints.hit("mqtt.pump")
        self._sum_up_ignored()
        self._flush_acks()
        now = self.clock()
        if now >= self._next_health:
            self._next_health = now + self.cfg.health_interval_s
            self.client.publish(self.topics["health"], json.dumps(self.health()), qos=1, retain=True)
        self.delivery.send(self._publish_checkin)

    def _publish_checkin(self, row) -> int | None:
        info = self.client.publish(self.topics["checkin"], json.dumps(row.payload, ensure_ascii=False), qos=1)
        return info.mid if info.rc == mqtt.MQTT_ERR_SUCCESS else None

    def _flush_acks(self) -> None:
        self.state.delivered_session += self.delivery.flush()

    @property
    def fault_item(self) -> Fault | None:
        """The worker's own fault, else a refused login: nothing is sent until it is fixed."""
        item = super().fault_item
        if item is None and self.state.login_refused and not self.stopping.is_set():
            return Fault("mqtt_login_refused", f"mqtt: the broker {self.cfg.host}:{self.cfg.port} refused this "
                         f"station's login ({self.state.login_refused}): check [mqtt] username and password (or "
                         "the client certificate) and the broker's password file; check-ins stay queued")
        return item

    def status(self) -> MqttStatus:
        """The link's view for `status`: the `mqtt` section and its worker's."""
        st = self.state
        return MqttStatus(**vars(super().status()), connected=st.connected, last_error=st.last_error,
                          failed_attempts=st.failed_attempts, connected_since=st.connected_since,
                          failed_total=st.failed_total, broker=f"{self.cfg.host}:{self.cfg.port}",
                          **self.delivery.progress().status_fields())

    def health(self) -> dict[str, Any]:
        faults = list(self.faults())
        return health_payload(self.station, self.outbox.stats(), uptime_s=time.time() - self.started_at,
                              **vars(self.delivery.progress()),
                              faults=[f.text for f in faults], fault_codes=[f.code for f in faults],
                              camera_fallback=self.camera_fallback(), chip_reader=self.chip_reader())
