"""Logging in to the hospital broker: the MQTT 5 client with the station's TLS settings and
credentials, and one clean line for IT when it fails. Shared by the link, `doctor` and `fleet`,
so all three connect (and explain a failure) the same way."""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.cards.sanitize import one_line
from agent.config import MqttConfig

SESSION_EXPIRY_S = 7 * 24 * 3600  # the broker keeps our subscription and queued verdicts for a week
# MQTT 5 Maximum Packet Size, advertised in CONNECT: the broker must not send the station a larger
# packet (it drops it), so no message on the verdict or receipt topic can fill a Pi's memory. A
# receipt of 100 ids is about 4 kB, a verdict at most messages.MAX_VERDICT_BYTES.
MAX_PACKET_BYTES = 16_384
#: CONNACK reasons that mean the broker will not take this station's login until IT fixes it
LOGIN_REFUSED = ("Bad user name or password", "Not authorized", "Bad authentication method", "Banned")


class InsecureBroker(ValueError):
    """TLS is off and the config did not say allow_insecure = true."""


def require_tls(cfg: MqttConfig) -> None:
    """Raises InsecureBroker unless TLS is on or the config allows a plain test broker."""
    if not cfg.tls and not cfg.allow_insecure:
        raise InsecureBroker(f"refusing to send check-ins to {cfg.host}:{cfg.port} without TLS; "
                             "set [mqtt] tls = true, or allow_insecure = true for a test broker")


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
    """An MQTT 5 client with the station's TLS settings and credentials (the link's, doctor's,
    fleet's). MQTT 5 because its PUBACK says when the broker refused a message (ACL): MQTT 3.1.1
    acknowledges a denied publish as if delivered."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    if cfg.tls:
        c.tls_set(ca_certs=cfg.ca_file or None, certfile=cfg.cert_file or None,
                  keyfile=cfg.key_file or None, cert_reqs=ssl.CERT_REQUIRED)
    if cfg.username:
        c.username_pw_set(cfg.username, cfg.password or None)
    return c


def _varint_len(n: int) -> int:
    """Bytes of MQTT's variable byte integer for `n`."""
    return 1 if n < 128 else 2 if n < 16_384 else 3 if n < 2_097_152 else 4


def max_payload(topic: str, max_packet: int | None) -> int | None:
    """The largest payload a QoS 1 PUBLISH on `topic` (no properties, as the link sends it) can
    carry within a broker's Maximum Packet Size (MQTT 5 CONNACK); None when the broker sets none.
    A broker drops the connection on a larger packet (Mosquitto: "oversize packet")."""
    if not max_packet:
        return None
    fixed = 2 + len(topic.encode("utf-8")) + 2 + 1      # topic length and name, packet id, no properties
    payload = max_packet - 1 - fixed - 1
    while payload > 0 and 1 + _varint_len(fixed + payload) + fixed + payload > max_packet:
        payload -= 1
    return max(payload, 0)


def connect_properties(session_expiry_s: int = SESSION_EXPIRY_S) -> Properties:
    """The station's CONNECT: a session kept a week, and no packet larger than MAX_PACKET_BYTES.
    `doctor`, which subscribes to the station's verdict topic too, keeps no session (0) but takes
    the same bound: a retained 80 MB verdict took it from 47 to 296 MB resident beside the station."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_s
    props.MaximumPacketSize = MAX_PACKET_BYTES
    return props
