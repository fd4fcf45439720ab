"""The station's MQTT link to the hospital broker (paho-mqtt 2.x, MQTT 5).

Topics, with {p} the prefix and {s} the station id (docs/asyncapi.yaml, docs/integrating.md):
  {p}/{s}/checkin  QoS 1, not retained: check-in events, drained from the outbox in order
  {p}/{s}/status   retained: online on connect; offline as last will and on clean shutdown
  {p}/{s}/health   retained, every health_interval_s
  {p}/{s}/verdict  subscribed: the hospital's answer to a check-in
  {p}/{s}/receipt  subscribed in receipt mode: the hospital's consumer confirms stored check-ins
  {p}/{s}/ignored  QoS 1, not retained: a verdict or receipt the station did not act on, and why

Publishing is driven from the outbox by this link's own thread, never from the scan path. A row
is marked delivered when the broker acknowledged it (PUBACK with a success reason), or, with
`delivered_on = "receipt"`, only when the hospital's consumer confirmed it: then no broker queue
limit or consumer session can lose a check-in. MQTT 5 is used because its PUBACK says when the
broker refused a message (ACL): MQTT 3.1.1 acknowledges a denied publish as if delivered.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent import __version__, failpoints, jsonbound
from agent.cards.sanitize import one_line
from agent.clock import clock_synced, now_iso
from agent.config import MqttConfig
from agent.mqtt.replies import Receipts, verdict_refusal
from agent.mqtt.schemas import errors as schema_errors
from agent.outbox import Outbox
from agent.worker import Worker, backoff

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600  # the broker keeps our subscription and queued verdicts for a week
MAX_VERDICT_BYTES = 4096
MAX_REPLY_NESTING = 8       # a verdict nests 1 deep, a receipt 2: bounded before parsing
# MQTT 5 Maximum Packet Size, advertised in CONNECT: the broker must not send the station a larger
# packet (it drops it), so no message on the verdict or receipt topic can fill a Pi's memory. A
# receipt of 100 ids is about 4 kB, a verdict at most MAX_VERDICT_BYTES.
MAX_PACKET_BYTES = 16_384
NO_MATCHING_SUBSCRIBERS = 0x10   # MQTT 5 PUBACK reason code: accepted, but nobody subscribed
NOBODY = "no hospital consumer is subscribed to the check-in topic"
NOTICE_EVERY_S = 60.0        # ignored messages: one log line per minute at most
NOTICES_PER_MINUTE = 30      # 'ignored' notices published, at most (a flood is not echoed)
RESCAN_EVERY_S = 5.0         # look for rows put back in the queue (`queue retry`) this often
SESSION_TAKEN_OVER = 0x8E     # MQTT 5 DISCONNECT reason: another client connected with our id
SHORT_SESSION_S = 30.0       # connections closed sooner than this, 3 in a row: say what it may be
#: CONNACK reasons that mean the broker will not take this station's login until IT fixes it
LOGIN_REFUSED = ("Bad user name or password", "Not authorized", "Bad authentication method", "Banned")


class InsecureBroker(ValueError):
    """TLS is off and the config did not say allow_insecure = true."""


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


def topics(prefix: str, station: str) -> dict[str, str]:
    return {name: f"{prefix}/{station}/{name}"
            for name in ("checkin", "status", "health", "verdict", "receipt", "ignored")}


def describe(exc: BaseException, tls: bool = False, where: str = "") -> str:
    """One clean line for IT (broker error strings are untrusted text: cleaned and capped)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        text = f"TLS: the broker's certificate was not accepted ({exc.verify_message})"
    elif tls and (isinstance(exc, (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError))
                  or getattr(exc, "reason", None) in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE",
                                                      "PACKET_LENGTH_TOO_LONG")):
        text = (f"the TLS handshake failed ({type(exc).__name__}: {getattr(exc, 'reason', None) or exc}): "
                f"is {where} a TLS port? (MQTT over TLS is usually 8883, plain MQTT 1883)")
    elif isinstance(exc, ssl.SSLError):
        text = f"TLS handshake failed ({exc.reason or exc})"
    elif isinstance(exc, ConnectionRefusedError):
        text = "connection refused (broker not running or wrong port)"
    elif isinstance(exc, OSError):
        text = f"network: {exc.strerror or exc}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return one_line(text)


def make_client(cfg: MqttConfig, client_id: str) -> mqtt.Client:
    """An MQTT 5 client with the station's TLS settings and credentials (the link's, doctor's)."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    if cfg.tls:
        c.tls_set(ca_certs=cfg.ca_file or None, certfile=cfg.cert_file or None,
                  keyfile=cfg.key_file or None, cert_reqs=ssl.CERT_REQUIRED)
    if cfg.username:
        c.username_pw_set(cfg.username, cfg.password or None)
    return c


def health_payload(station: str, stats: dict[str, Any], *, uptime_s: float, delivered_on: str,
                   awaiting: int = 0, oldest_awaiting_s: float | None = None, faults: list[str] = (),
                   fault_codes: list[str] | None = None) -> dict[str, Any]:
    """The health message (agent/schemas/health.json), from the outbox's stats(): built here for
    the link and for doctor's probe. `fault_codes` None: unknown, left out."""
    report = {"station": station, "at": now_iso(), "version": __version__, "uptime_s": round(max(0.0, uptime_s), 1),
              "queue_depth": stats.get("queue_depth") or 0,
              "oldest_undelivered_age_s": stats.get("oldest_undelivered_age_s"),
              "delivered_total": stats.get("delivered_total") or 0, "failed_total": stats.get("failed_total") or 0,
              "delivered_on": delivered_on, "awaiting_receipt": awaiting,
              "oldest_awaiting_receipt_s": None if oldest_awaiting_s is None else round(oldest_awaiting_s, 1),
              "clock_synced": clock_synced(), "faults": list(faults)}
    if fault_codes is not None:
        report["fault_codes"] = sorted(set(fault_codes))
    return report


class MqttLink(Worker):
    """Owns the MQTT connection. start() runs it in a supervised background thread; stop() ends
    cleanly (publishes 'offline'). A crash of the thread (an outbox error, say) drops the
    connection, shows as a fault and restarts it: unacknowledged rows are sent again."""

    stall_s = 150.0   # beats every 50 ms while connected; a connect() hangs at most a TCP timeout

    def __init__(self, cfg: MqttConfig, station: str, outbox: Outbox, *,
                 on_verdict: Callable[[dict], None] | None = None,
                 faults: Callable[[], list[tuple[str, str]]] = lambda: [],
                 backoff: tuple[float, float] = (1.0, 120.0), window: int = 32,
                 started_at: float | None = None):
        super().__init__("mqtt-link")
        if not cfg.tls and not cfg.allow_insecure:
            raise InsecureBroker(f"refusing to send check-ins to {cfg.host}:{cfg.port} without TLS; "
                                 "set [mqtt] tls = true, or allow_insecure = true for a test broker")
        self.cfg, self.station, self.outbox = cfg, station, outbox
        self.on_verdict, self.faults = on_verdict, faults
        self.backoff_min, self.backoff_max = backoff
        self.window = window
        self.topics = topics(cfg.topic_prefix, station)
        self.state = LinkState()
        self.started_at = started_at or time.time()
        self.receipts = cfg.delivered_on == "receipt"
        self._inflight: dict[int, str] = {}   # mid -> event id
        self._acked: list[str] = []
        self._receipts = Receipts(cfg.receipt_timeout_s, cfg.receipt_window)   # receipt mode
        self._sent_upto = -1
        self._paused_until = 0.0
        self._refusals = 0
        self._next_health = 0.0
        self._next_rescan = 0.0
        self._short_sessions = 0
        self._session_started = time.time()
        self._ignored, self._ignored_logged_at, self._ignored_last = 0, -1e9, ""
        self._notices: list[float] = []
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

    def _status(self, state: str, reason: str | None = None, since: float | None = None) -> dict[str, Any]:
        status = {"state": state, "station": self.station, "at": now_iso(), "version": __version__,
                  "since": now_iso(since)}
        if reason:
            status["reason"] = reason
        return status

    def _arm_will(self) -> None:
        """Before every connect: the broker publishes this when the connection is lost. It cannot
        know when that will be, so `since` says when this connection began: the station was online
        from then until the broker noticed (its last health report narrows it)."""
        self._session_started = time.time()
        will = self._status("offline", "connection lost", since=self._session_started)
        self.client.will_set(self.topics["status"], json.dumps(will), qos=1, retain=True)

    # -- lifecycle -------------------------------------------------------------------------

    def work(self) -> None:
        attempt = 0
        try:
            while not self.stopping.is_set():
                self.state.history = (self.state.history + [time.time()])[-20:]
                try:
                    props = Properties(PacketTypes.CONNECT)
                    props.SessionExpiryInterval = SESSION_EXPIRY_S
                    props.MaximumPacketSize = MAX_PACKET_BYTES
                    self._arm_will()
                    self.client.connect(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s,
                                        clean_start=False, properties=props)
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
        if self._ignored:
            self._ignored_logged_at = -1e9
            self._sum_up_ignored()

    def _drop(self) -> None:
        self._acked.clear()  # not marked: they are sent again, the hospital deduplicates by id
        self._inflight.clear()
        self._receipts.clear()
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
            info = self.client.publish(self.topics["status"], json.dumps(self._status("offline", "shutdown")),
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
        self._flush_acks()
        self.state.connected = False
        self._inflight.clear()  # unacknowledged rows stay in the outbox and are sent again
        self._receipts.clear()  # and so do rows without a receipt

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
        self._sent_upto, self._paused_until, self._next_health = -1, 0.0, 0.0
        log.info("MQTT connected to %s:%d (session %s)", self.cfg.host, self.cfg.port,
                 "resumed" if flags.session_present else "new")
        client.publish(self.topics["status"], json.dumps(self._status("online", since=self._session_started)),
                       qos=1, retain=True)
        # retain-as-published: a verdict published with retain = true is seen as such even while we
        # are subscribed (the broker would otherwise clear the flag), so it is never shown
        opts = SubscribeOptions(qos=1, retainAsPublished=True)
        client.subscribe([(self.topics[name], opts) for name in ("verdict", "receipt")
                          if name == "verdict" or self.receipts])

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.state.connected and not self.stopping.is_set():  # our own goodbye is no error
            self.state.last_error = one_line(f"disconnected: {reason_code}")
            lasted = time.time() - (self.state.connected_since or time.time())
            self._short_sessions = self._short_sessions + 1 if lasted < SHORT_SESSION_S else 0
            if getattr(reason_code, "value", None) == SESSION_TAKEN_OVER or self._short_sessions >= 3:
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
        for rc in reason_codes:
            if rc.is_failure:
                log.error("MQTT: subscribing to %s refused: %s (verdicts%s will not arrive; check the "
                          "broker's ACL)", self.topics["verdict"], rc, " and receipts" if self.receipts else "")

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        event_id = self._inflight.pop(mid, None)
        if event_id is None:
            return  # status / health, or a resend of an earlier session's message
        nobody = getattr(reason_code, "value", None) == NO_MATCHING_SUBSCRIBERS
        if nobody and self.cfg.require_subscriber:
            # MQTT 5 says so in the PUBACK: the broker dropped it, no consumer was listening (a
            # consumer restarting, or a broker restarted before the consumers subscribed again)
            if self.state.last_error != NOBODY:
                log.warning("MQTT: %s; check-ins stay queued and are sent again", NOBODY)
            self._resend_after(min(max(self.backoff_min, 1.0), self.backoff_max), NOBODY)
            return
        if reason_code.is_failure:
            self.state.failed_total += 1
            self.outbox.count_refused()
            self._refusals += 1
            pause = backoff(self._refusals, self.backoff_min, self.backoff_max, jitter=False)
            self._resend_after(pause, one_line(f"broker refused a check-in on {self.topics['checkin']}: {reason_code}"))
            log.error("MQTT: %s; check-ins stay queued, retry in %.1f s", self.state.last_error, pause)
            return
        self._refusals = 0
        if self.receipts:
            self._receipts.taken(event_id, time.time())   # delivered when the hospital says so
        else:
            self._acked.append(event_id)

    def _resend_after(self, pause: float, reason: str) -> None:
        """Not delivered: send again from the oldest undelivered row, after `pause` seconds."""
        self._paused_until = time.time() + pause
        self._sent_upto = -1
        self.state.last_error = reason

    def _on_message(self, client, userdata, msg) -> None:
        """A verdict or a receipt from the hospital. Untrusted: anything the station does not act
        on is logged (a line a minute at most) and reported on the `ignored` topic with the reason."""
        kind = "receipt" if msg.topic == self.topics["receipt"] else "verdict"
        try:
            if len(msg.payload) > MAX_VERDICT_BYTES:
                raise ValueError(f"{len(msg.payload)} bytes is too large")
            data = jsonbound.loads(msg.payload, max_bytes=MAX_VERDICT_BYTES, max_depth=MAX_REPLY_NESTING)
            problems = schema_errors(kind, data)
            if problems:
                raise ValueError(problems[0])
        except Exception as exc:  # noqa: BLE001 - a bad message must never reach the scan loop
            self._ignore(kind, None, "malformed", str(exc)[:200])
            return
        if kind == "receipt":
            self._receipt(data["ids"])
        else:
            self._verdict({k: one_line(v, 200) if isinstance(v, str) else v for k, v in data.items()}, msg.retain)

    def _receipt(self, ids: list[str], quiet: bool = False) -> None:
        """The consumer stored these check-ins (or already had them): delivered, those this station
        published and awaits a receipt for; any other id is ignored (`quiet`: silently)."""
        counted = self._receipts.confirmed(ids, set(self._inflight.values()))
        if counted:
            self.state.delivered_session += self.outbox.mark_delivered(counted)
        if quiet:
            return
        for event_id in dict.fromkeys(ids):
            if event_id in counted:
                continue
            row = self.outbox.get(event_id)
            if row is None or row.delivered_at is None:   # a repeated receipt for a delivered one is normal
                self._ignore("receipt", event_id, "unknown", "not awaiting a receipt: not published by this "
                             "station since it connected; not counted as delivered")

    def _verdict(self, verdict: dict, retained: bool) -> None:
        """Shown once per check-in, only while the patient may still be at the counter."""
        event_id = verdict["id"]
        row = self.outbox.get(event_id)
        if row is not None and self.receipts:
            self._receipt([event_id], quiet=True)   # a verdict proves the hospital has the check-in
        refusal = verdict_refusal(row, retained, time.time(), self.cfg.verdict_max_age_s, self.outbox.retention_s)
        if refusal:
            self._ignore("verdict", event_id, *refusal)
        elif not self.outbox.mark_signalled(event_id):
            self._ignore("verdict", event_id, "repeated", "a verdict for this check-in was already shown")
        elif self.on_verdict:
            self.on_verdict(verdict)

    def _ignore(self, kind: str, event_id: str | None, reason: str, detail: str) -> None:
        """Log (rate-limited) and tell the hospital, on the `ignored` topic, what was not acted on."""
        self._ignored += 1
        now = time.monotonic()
        if now - self._ignored_logged_at >= NOTICE_EVERY_S:
            log.warning("MQTT: ignored a %s %s (%s: %s; %d ignored since the last such line)", reason, kind,
                        event_id or "no id", one_line(detail, 200), self._ignored)
            self._ignored, self._ignored_logged_at = 0, now
        else:
            self._ignored_last = f"{reason} {kind}"
        self._notices = [t for t in self._notices if now - t < 60.0]
        if len(self._notices) >= NOTICES_PER_MINUTE or not self.state.connected:
            return
        self._notices.append(now)
        notice = {"station": self.station, "at": now_iso(), "message": kind, "id": event_id, "reason": reason,
                  "detail": one_line(detail, 200)}
        self.client.publish(self.topics["ignored"], json.dumps(notice), qos=1)

    # -- sending ---------------------------------------------------------------------------

    def _sum_up_ignored(self) -> None:
        """On a timer, not on the next ignored message: the count of a flood that stopped is written
        a minute after its first line at most."""
        if self._ignored and time.monotonic() - self._ignored_logged_at >= NOTICE_EVERY_S:
            log.warning("MQTT: %d more verdicts/receipts ignored in the last %.0f s (the last: %s)", self._ignored,
                        time.monotonic() - self._ignored_logged_at, self._ignored_last)
            self._ignored, self._ignored_logged_at = 0, time.monotonic()

    def _pump(self) -> None:
        failpoints.hit("mqtt.pump")
        self._sum_up_ignored()
        now = time.time()
        self._flush_acks()
        if now >= self._next_health:
            self._next_health = now + self.cfg.health_interval_s
            self.client.publish(self.topics["health"], json.dumps(self.health()), qos=1, retain=True)
        if now >= self._next_rescan:
            self._next_rescan = now + RESCAN_EVERY_S
            self._rescan_if_requeued()
        if self.receipts:
            self._check_receipts(now)
        if now < self._paused_until:
            return
        room = self.window - len(self._inflight)
        if self.receipts:
            room = min(room, self._receipts.room(len(self._inflight)))
        if room <= 0:
            return
        sent = []
        for row in self.outbox.pending(limit=room, after_seq=self._sent_upto):
            info = self.client.publish(self.topics["checkin"], json.dumps(row.payload, ensure_ascii=False), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break
            self._inflight[info.mid] = row.id
            self._sent_upto = row.seq
            sent.append(row.id)
        self.outbox.count_attempt(sent)  # one write per batch: IT sees how often each was tried

    def _rescan_if_requeued(self) -> None:
        """`queue retry` puts a delivered row back behind the send cursor: start again from the
        oldest undelivered row when one is there that is neither in flight nor awaiting a receipt."""
        busy = set(self._inflight.values()) | self._receipts.awaiting.keys()
        for event_id, seq in self.outbox.pending_keys(limit=len(busy) + 1):
            if seq > self._sent_upto:
                return
            if event_id not in busy:
                log.info("MQTT: check-in #%d is queued again; sending from the oldest undelivered", seq)
                self._sent_upto = -1
                return

    def _check_receipts(self, now: float) -> None:
        """Receipt mode: no receipt in time for the oldest sent check-in: send every undelivered
        check-in again, oldest first, with the same ids."""
        waiting = len(self._receipts.awaiting)
        if (waited := self._receipts.overdue(now)) is not None:
            log.warning("MQTT: %d check-in(s) without a receipt from the hospital for %.0f s; sending again",
                        waiting, waited)
            self._sent_upto = -1

    def _flush_acks(self) -> None:
        if self._acked:
            ids, self._acked = self._acked, []
            self.state.delivered_session += self.outbox.mark_delivered(ids)

    @property
    def fault_item(self) -> tuple[str, str] | None:
        """The worker's own fault, else a refused login: nothing is sent until it is fixed."""
        item = super().fault_item
        if item is None and self.state.login_refused and not self.stopping.is_set():
            return ("mqtt_login_refused", f"mqtt: the broker {self.cfg.host}:{self.cfg.port} refused this station's "
                    f"login ({self.state.login_refused}): check [mqtt] username and password (or the client "
                    "certificate) and the broker's password file; check-ins stay queued")
        return item

    def status(self) -> dict[str, Any]:  # type: ignore[override]  - the link's view for `status`
        st = self.state
        return {**super().status(), "connected": st.connected, "last_error": st.last_error,
                "failed_attempts": st.failed_attempts, "connected_since": st.connected_since,
                "failed_total": st.failed_total, "broker": f"{self.cfg.host}:{self.cfg.port}",
                "delivered_on": self.cfg.delivered_on, "awaiting_receipt": len(self._receipts.awaiting)}

    def health(self) -> dict[str, Any]:
        faults = list(self.faults())
        return health_payload(self.station, self.outbox.stats(), uptime_s=time.time() - self.started_at,
                              delivered_on=self.cfg.delivered_on, awaiting=len(self._receipts.awaiting),
                              oldest_awaiting_s=self._receipts.oldest_age(time.time()),
                              faults=[text for _, text in faults], fault_codes=[code for code, _ in faults])
