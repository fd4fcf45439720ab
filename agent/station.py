"""The station: capture -> decode -> cards -> checkin -> feedback / outbox -> mqtt, wired together.

`Station.step(frame)` is the whole per-frame logic (deterministic in frame timestamps, so tests
drive it directly); `Station.run()` is the daemon loop around it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING


from agent.capture import Frame, Grabber, open_source
from agent.capture.scene import SceneGate
from agent.cards import mask_name
from agent.cards.flags import PRIORITY, card_flags
from agent.cards.model import NUMBER_FIELD
from agent.faults import Fault
from agent.checkin import Action, Decision, Presenter, checkin_body
from agent.chip.counter import ChipOutcome, ChipReader, absent, chip_field
from agent.config import Config
from agent.control import ControlServer
from agent.decode import FrameReader
from agent.feedback import Feedback, Signal, make_output
from agent.feedback.voice import Voice, make_voice
from agent.event import MAX_CHECKIN_BYTES, encode
from agent.outbox import Outbox, OutboxError
from agent.outputs import record as output_record
from agent.outputs.devices import make_outputs
from agent import __version__, clock, paths, runstate
from agent.clock import clock_synced
from agent.schedule import Scheduler
from agent.status_types import CameraStatus, Counters
from agent.sdnotify import notify, watchdog_interval

if TYPE_CHECKING:
    from agent.mqtt.messages import Verdict

log = logging.getLogger(__name__)

DEMO_FRAMES = paths.DEMO_FRAMES   # kept for callers of the old name
OUTBOX_LOCK_WAIT_S = 60.0       # at start, wait this long for another process's lock on the outbox
#: the voice stays silent when nothing moved in front of the camera for this long (nobody there:
#: a code-like poster does not make the station talk to an empty counter)
PRESENT_S = 15.0
#: guidance reasons kept for status and snapshots
LAST_REASONS = 5
#: a chip read's outcome is waited for this long past `[chip] timeout_s`; then the check-in is
#: stored without it (a reader stuck in a command, a crashed worker: never a lost check-in)
CHIP_GRACE_S = 2.0


@dataclasses.dataclass
class PendingChip:
    """A CCCD check-in waiting for its chip read (not stored yet: no green)."""
    decision: Decision
    flags: list[str]
    at: float | None
    ticket: int
    deadline: float


class Station:
    def __init__(self, cfg: Config, *, feedback: Feedback | None = None, outbox: Outbox | None = None,
                 link_factory=None, voice: Voice | None = None, chip_transport=None):
        self.cfg = cfg
        clock.use_zone(cfg.station.timezone)   # every timestamp sent keeps this offset
        state = Path(cfg.station.state_dir)
        self.outbox = outbox or Outbox(paths.outbox(state), station=cfg.station.id,
                                       max_events=cfg.outbox.max_events, min_free_mb=cfg.outbox.min_free_mb,
                                       retention_s=cfg.outbox.retention_s, wait_s=OUTBOX_LOCK_WAIT_S)
        self.feedback = feedback or Feedback(make_output(cfg.feedback))
        self.voice = voice if voice is not None else make_voice(cfg.feedback)
        self._frame_t = 0.0
        self.reader = FrameReader()
        self.presenter = Presenter(cfg.checkin.cooldown_s, cfg.checkin.try_again_s)
        self.counters = Counters()
        self.started_at = time.time()
        self.grabber: Grabber | None = None
        self.source = None                    # the camera (a source may steer itself: steer())
        self.camera_view = None               # crop and exposure of the newest frame
        self.link = None
        if cfg.mqtt is not None:
            from agent.mqtt.link import MqttLink
            factory = link_factory or MqttLink
            self.link = factory(cfg.mqtt, cfg.station.id, self.outbox, on_verdict=self.on_verdict,
                                faults=self.fault_items, camera_fallback=self.camera_fallback,
                                chip_reader=lambda: self.chip.health() if self.chip is not None else None)
        self.status_path = paths.status_file(cfg.station.state_dir)
        self.outputs = make_outputs(cfg)
        #: records of outputs not enabled any more: shown until acknowledged all the same
        self.old_output_records = {kind: path for kind in output_record.KINDS
                                   if kind not in {o.writer.kind for o in self.outputs}
                                   and (path := paths.output_record(state, kind)).exists()}
        self.last_view: tuple | None = None   # (newest frame, codes last decoded, guidance, camera view) for snapshots
        self.control: ControlServer | None = None
        self._stop = threading.Event()
        self.scene = SceneGate(cfg.checkin.idle_after_s, cfg.checkin.idle_fps)
        self.outbox_fault: str | None = None
        self._status_failing = False
        #: the CCCD chip reader ([chip] reader; `chip_transport`: a card or reader given by tests)
        self.chip = ChipReader(cfg.chip, chip_transport) if cfg.chip.reader != "none" else None
        self.pending_chip: PendingChip | None = None

    # -- per frame ---------------------------------------------------------------------------

    def step(self, frame: Frame) -> list[Decision]:
        self.poll_chip()
        self.counters.frames += 1
        self._frame_t = frame.t
        self.last_view = (frame.gray, [], None, frame.view)  # codes only from this very frame
        self.camera_view = frame.view
        decode, active = self.scene.admit(frame)
        steer = getattr(self.source, "steer", None)
        if not decode:
            if steer is not None and not active:
                steer(frame, None, False)   # idle: the whole field (at idle_fps)
            return []  # idle: decode at idle_fps only, to keep the Pi cool
        self.counters.decoded += 1
        result = self.reader.read(frame.gray, active=active, view=frame.view)
        self.last_view = (frame.gray, result.codes, result.guidance, frame.view)
        if result.codes or result.candidates:
            self.scene.hold(frame.t)
        decisions = self.presenter.on_frame(frame.t, result, today=clock.today(), view=frame.view)
        for d in decisions:
            self._act(d)
        if steer is not None:
            # after acting: a check-in that could not be stored is not handled (forget())
            steer(frame, result, active or bool(result.codes or result.candidates),
                  self.presenter.handled(result.codes))
        return decisions

    def _act(self, d: Decision) -> None:
        {Action.CHECKIN: self._checkin, Action.ALREADY_READ: self._already_read,
         Action.REJECTED: self._rejected, Action.TRY_AGAIN: self._try_again}[d.action](d)

    def flags(self, d: Decision) -> list[str]:
        """The counter facts of a check-in about to be stored (agent.cards.flags), repeat_today from
        the outbox: the same card stored since midnight in the station's zone."""
        now = time.time()
        flags = card_flags(d.read, clock.today(now), self.cfg.station.facility_codes,
                           self.cfg.checkin.priority_groups)
        number = d.read.card.get(NUMBER_FIELD.get(d.read.kind, ""))
        try:
            if number and self.outbox.checked_in_since(d.read.kind, number, clock.day_start(now)):
                flags.append("repeat_today")
        except Exception as exc:  # noqa: BLE001 - the put below says what is wrong; the flag is only a hint
            log.warning("repeat_today not checked: %s", exc)
        return flags

    def _checkin(self, d: Decision) -> None:
        flags = self.flags(d)
        # read_at: when the camera took the frame (monotonic seconds), not when the decoder
        # finished with it; a frame "older" than a minute is not on that clock (a test's frame
        # numbers): read as now
        age = time.monotonic() - self._frame_t
        at = time.time() - age if 0.0 <= age <= 60.0 else None
        if self.chip is not None and d.read.kind == "cccd":
            if self.pending_chip is None:
                self._ask_for_chip(d, flags, at)
                return
            # one reader, one card at a time: the card before is still being read
            self._store(d, flags, at, absent("the reader was busy with the card before"))
            return
        self._store(d, flags, at, None)

    # -- the CCCD chip: asked for after the QR, read by the chip worker, never in this loop -------

    def _ask_for_chip(self, d: Decision, flags: list[str], at: float | None) -> None:
        """The QR of a CCCD was read: ask for the card on the reader (amber and the prompt, no
        green: nothing is stored yet). The check-in is stored when the read ends (poll_chip), at
        the latest `timeout_s` + CHIP_GRACE_S from now, whatever the worker does."""
        if not self.chip.started:
            self.chip.start()                 # tests drive step() without run()
        ticket = self.chip.request(d.read.card, clock.today())
        self.pending_chip = PendingChip(d, flags, at, ticket,
                                        time.monotonic() + self.cfg.chip.timeout_s + CHIP_GRACE_S)
        self.feedback.signal(Signal.CHIP_WAIT, self._describe(d))
        self._say(Signal.CHIP_WAIT, present=True)

    def poll_chip(self) -> bool:
        """Store the pending CCCD check-in once its chip read ended or its deadline passed; True
        when one was stored (or refused by the outbox). Called every frame and every loop turn."""
        pending = self.pending_chip
        if pending is None:
            return False
        outcome = self.chip.outcome(pending.ticket)
        if outcome is None:
            if time.monotonic() < pending.deadline:
                return False
            outcome = absent(f"the chip reader did not answer within {self.cfg.chip.timeout_s:g} s")
        self.pending_chip = None
        self._store(pending.decision, pending.flags, pending.at, outcome)
        return True

    def _fit(self, body: dict) -> dict:
        """A check-in over MAX_CHECKIN_BYTES would be refused by the outbox and lost: the chip's
        face, then its fields, give way first (the reason says so). 512 bytes spare for the envelope."""
        chip = body.get("chip")
        for key, why in (("face_jpeg", "face image left out: the check-in would be too large"),
                         ("fields", "chip fields left out: the check-in would be too large")):
            if chip is None or len(encode(body)) <= MAX_CHECKIN_BYTES - 512:
                break
            if chip.get(key):
                if key == "face_jpeg":
                    del chip["face_jpeg"]
                else:
                    chip["fields"] = {}
                chip["reason"] = "; ".join(x for x in (chip["reason"], why) if x)[:300]
        return body

    def _store(self, d: Decision, flags: list[str], at: float | None, outcome: ChipOutcome | None) -> None:
        chip = None
        if outcome is not None:
            if outcome.mismatch:
                flags = [*flags, "chip_mismatch"]
            chip = chip_field(outcome, self.cfg.chip.dg13_fields, read_face=self.cfg.chip.read_face)
        try:
            row = self.outbox.put(self._fit(checkin_body(d.read, flags=flags, at=at, chip=chip)))
        except OutboxError as exc:  # full, disk full, locked, unwritable: said in one line
            self._refuse(d, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - anything else: still no green without a stored check-in
            self._refuse(d, f"outbox error: {type(exc).__name__}: {exc}")
            return
        self.outbox_fault = None
        self.counters.checkins += 1
        self.counters.last_checkin_at = time.time()
        verdict = d.read.verdict
        self.counters.by_verdict[verdict] = self.counters.by_verdict.get(verdict, 0) + 1
        for flag in flags:
            self.counters.by_flag[flag] = self.counters.by_flag.get(flag, 0) + 1
        staff_look = chip is not None and ("chip_mismatch" in flags or "failed" in (chip["verified"], chip["clone_check"]))
        if verdict != "ok":
            signal = Signal.CHECKIN_WARNING          # staff must look at the card first
        elif staff_look:
            signal = Signal.CHECKIN_CHIP_MISMATCH    # a printed QR of somebody else, or a chip that lies
        elif "other_facility" in flags:
            signal = Signal.CHECKIN_OTHER_FACILITY
        elif any(f in PRIORITY for f in flags):
            signal = Signal.CHECKIN_PRIORITY
        else:
            signal = Signal.CHECKIN
        self.feedback.signal(signal, self._describe(d) + (f" [{', '.join(flags)}]" if flags else ""))
        self._say(signal, verdict if verdict != "ok" else None, present=True)   # only now: it is on disk
        card = {**d.read.card, "flags": ",".join(flags)}
        for out in self.outputs:                         # typed or sent like a USB scanner: after the commit
            out.send(d.read.kind, card, d.payload or "")
        log.info("check-in #%d %s %s %s (%s)%s%s", row.seq, d.read.kind, verdict,
                 self._who(d), ", ".join(p.code for p in d.read.problems) or "no problems",
                 f" flags {','.join(flags)}" if flags else "",
                 f" chip {chip['verified']}/{chip['clone_check']}" if chip is not None else "")

    def _already_read(self, d: Decision) -> None:
        if self.pending_chip is not None and self.pending_chip.decision.key == d.key:
            return          # shown again while its chip is read: the check-in is on its way
        self.counters.already_read += 1
        self.feedback.signal(Signal.ALREADY_READ, self._describe(d))
        self._say(Signal.ALREADY_READ, present=True)
        log.info("already read: %s %s", d.read.kind, self._who(d))

    def _rejected(self, d: Decision) -> None:
        self.counters.rejected += 1
        self.counters.by_verdict[d.read.verdict] = self.counters.by_verdict.get(d.read.verdict, 0) + 1
        why = d.read.problems[0].message if d.read.problems else d.read.verdict
        self.feedback.signal(Signal.REJECTED, why)
        self._say(Signal.REJECTED, present=True)
        # problem codes only: messages may quote what the card says (a birth date, a name)
        log.info("rejected %s code: %s", d.read.kind,
                 ", ".join(p.code for p in d.read.problems) or d.read.verdict)

    def _try_again(self, d: Decision) -> None:
        self.counters.try_again += 1
        reason = d.reason or "unknown"
        self.counters.guidance[reason] = self.counters.guidance.get(reason, 0) + 1
        self.counters.last_guidance.append({"reason": reason, "at": time.time()})
        del self.counters.last_guidance[:-LAST_REASONS]
        self.feedback.signal(Signal.TRY_AGAIN, reason)
        self._say(Signal.TRY_AGAIN, reason)

    def present(self) -> bool:
        """Somebody is at the counter: the scene changed within PRESENT_S (frame time)."""
        return self._frame_t - self.scene.moved_at <= PRESENT_S

    def _say(self, signal: Signal, reason: str | None = None, present: bool | None = None) -> None:
        """Speak the signal's prompt; `present` None: judged from the scene (a code read just now
        means somebody is there)."""
        if self.voice is not None:
            self.voice.say(signal, reason, present=self.present() if present is None else present)

    def _refuse(self, d: Decision, reason: str) -> None:
        self.counters.refused += 1
        self.outbox_fault = reason
        self.presenter.forget(d.key)
        self.feedback.signal(Signal.FAULT, reason)
        log.error("check-in NOT recorded (%s): %s", reason, self._who(d))

    def _who(self, d: Decision) -> str:
        name = d.read.card.get("name")
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            return repr(name)
        return mask_name(name)

    def _describe(self, d: Decision) -> str:
        return f"{d.read.kind.upper()} {self._who(d)} ({d.read.verdict})"

    def on_verdict(self, verdict: Verdict) -> None:
        """The hospital answered a check-in (called on the MQTT thread, once per check-in id, with
        every text field already cleaned)."""
        accepted = verdict.accepted
        words = f"{verdict.code or ''} {verdict.message or ''}".strip()
        # the hospital's text is quoted and labelled (one JSON string, so a quote inside cannot end
        # it): "check-in #999 ..." in a verdict must not read as the station's own check-in line
        self.feedback.signal(Signal.VERDICT_ACCEPTED if accepted else Signal.VERDICT_REJECTED,
                             f"hospital's words: {json.dumps(words, ensure_ascii=False)}" if words else "")
        if not accepted:
            self._say(Signal.VERDICT_REJECTED)
        log.info("hospital verdict for %s: %s, code %s", verdict.id, verdict.result,
                 json.dumps(verdict.code or "", ensure_ascii=False))

    def workers(self) -> list:
        """Every background worker of the running station (each supervised, see agent.worker)."""
        return [w for w in (self.grabber, self.link, self.control, self.feedback, self.chip,
                            *(o.writer for o in self.outputs))
                if w is not None and hasattr(w, "healthy")]

    def faults(self, leds: bool = False) -> list[str]:
        """Everything wrong, for status and the health topic; `leds`: only what the counter staff
        should see blinking (a PC not reading the keyboard output is IT's business)."""
        return [f.text for f in self.fault_items(leds)]

    def camera_fallback(self) -> str | None:
        """Why the camera's control "auto" went back to the fixed view (None: it has not): a
        warning for status and the health message, never a fault (it reads as "fixed" does)."""
        control_status = getattr(self.source, "control_status", None)
        return control_status().fallback if control_status is not None else None

    def fault_items(self, leds: bool = False) -> list[Fault]:
        """faults() as Faults: the code from a fixed list (health.json `fault_codes`) for
        monitoring, the text for people."""
        out = []
        if self.grabber is not None and self.grabber.fault:
            out.append(Fault("camera", f"camera: {self.grabber.fault}"))
        out += [item for w in self.workers() if w is not self.grabber and (item := w.fault_item)
                and not (leds and item.code in ("mqtt_login_refused", "chip_reader"))]   # IT's to fix (the broker
        # signal shows a refused login; without the chip reader every check-in is still stored, chip "absent")
        if self.outbox_fault:
            out.append(Fault("outbox_refusing", f"outbox: {self.outbox_fault}"))
        if not leds:
            out += [Fault(f"output_{o.writer.kind}", o.writer.warning) for o in self.outputs if o.writer.warning]
            # lines dropped or typed short: until IT acknowledges them, whatever the next lines did
            out += [Fault(f"output_{o.writer.kind}", lost) for o in self.outputs if (lost := o.writer.unacknowledged)]
            out += [Fault(f"output_{kind}", lost.text(kind)) for kind, path in self.old_output_records.items()
                    if (lost := output_record.load(path)) is not None]
            if self.voice is not None and (warning := self.voice.warning):
                out.append(Fault("voice", warning if warning.startswith("voice") else f"voice: {warning}"))
        for damaged in self.outbox.damaged_files():
            out.append(Fault("outbox_damaged_file", f"outbox: damaged file {damaged} kept with check-ins that "
                             f"could not all be read; see 'scanner-agent queue import {damaged}'"))
        return out

    # -- daemon loop -------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self, source=None) -> None:
        """The daemon loop, until stop(). `source` overrides the configured camera (benchmarks)."""
        source = source or open_source(self.cfg.camera, demo_frames=str(DEMO_FRAMES))
        self.source = source
        self.grabber = Grabber(source).start()
        for out in self.outputs:
            out.writer.start()
        if self.link is not None:
            self.link.start()
        if self.chip is not None and not self.chip.started:
            self.chip.start()
        try:
            self.control = ControlServer(paths.control_socket(self.cfg.station.state_dir),
                                         {"snapshot": self.snapshot, "status": self.status_json,
                                          "output_ack": self.acknowledge_outputs}).start()
        except OSError as exc:
            log.warning("no control socket (snapshots unavailable): %s", exc)
        self.feedback.signal(Signal.READY)
        notify("READY=1\nSTATUS=scanning")
        log.info("station %s ready (camera %s, %s)", self.cfg.station.id, self.cfg.camera.source,
                 f"broker {self.cfg.mqtt.host}:{self.cfg.mqtt.port}" if self.cfg.mqtt else "no broker: queueing")
        schedule = self.schedule()
        try:
            while not self._stop.is_set():
                frame = self.grabber.get(timeout=0.2)
                if frame is not None:
                    self.step(frame)
                else:
                    self.poll_chip()
                schedule.run_due()
        finally:
            self.shutdown()

    def schedule(self, clock=time.monotonic) -> Scheduler:
        """The periodic tasks of the daemon loop."""
        s = Scheduler(clock)
        if dog := watchdog_interval():
            s.every(dog, self._watchdog, name="watchdog")
        s.every(2, self.write_status, name="status")
        s.every(60, self._purge, name="purge")
        s.every(10, self._signal_faults, name="faults")
        if self.link is not None:
            s.every(30, self._signal_broker, first_in=15, name="broker")  # the first connection takes a moment
        return s

    def _watchdog(self) -> None:
        # from the main loop, and only while every worker is alive and making progress: a stuck
        # decoder, camera read or sender gets the service restarted by systemd
        if all(w.healthy() for w in self.workers()):
            notify("WATCHDOG=1")

    def _signal_faults(self) -> None:
        if faults := self.faults(leds=True):
            self.feedback.signal(Signal.FAULT, "; ".join(faults))

    def _signal_broker(self) -> None:
        if not self.link.state.connected:
            self.feedback.signal(Signal.BROKER_DOWN, self.link.state.last_error or "")

    def _purge(self) -> None:
        try:
            self.outbox.purge()
        except OutboxError as exc:  # delivered rows stay a little longer; the fault says why
            self.outbox_fault = str(exc)
            log.error("purging delivered check-ins failed: %s", exc)

    def status(self) -> runstate.DaemonStatus:
        """What `scanner-agent status` shows about the running daemon: each component says its own."""
        source = self.cfg.camera.source
        camera = self.grabber.camera_status(source) if self.grabber else CameraStatus(source)
        if self.camera_view is not None:
            camera.view = self.camera_view.status()
        if hasattr(self.source, "control_status"):
            camera.controls = self.source.control_status()
        return runstate.DaemonStatus(
            pid=os.getpid(), version=__version__, station=self.cfg.station.id, started_at=self.started_at,
            updated_at=time.time(), camera=camera, mqtt=self.link.status() if self.link is not None else None,
            clock_synced=clock_synced(), faults=self.faults(), workers={w.name: w.status() for w in self.workers()},
            counters=dataclasses.replace(self.counters), outbox=self.outbox.summary())

    def acknowledge_outputs(self) -> bytes:
        """`scanner-agent output ack`: IT has seen to the lines the outputs dropped or typed short;
        their faults clear. The answer: what was acknowledged, as a JSON list of texts."""
        said = [text for o in self.outputs if (text := o.writer.acknowledge())]
        old, self.old_output_records = self.old_output_records, {}   # replaced, not changed: status reads it
        for kind, path in old.items():
            if (lost := output_record.load(path)) is not None:
                said.append(lost.text(kind))
            output_record.clear(path)
        return json.dumps(said, ensure_ascii=False).encode()

    def status_json(self) -> bytes:
        """status() from memory, for `scanner-agent status` when the status file cannot be written
        (a full disk): its faults must still show."""
        import json

        return json.dumps(self.status().to_dict()).encode()

    def write_status(self) -> None:
        try:
            runstate.write(self.status_path, self.status())
        except OSError as exc:
            if not self._status_failing:
                log.warning("cannot write %s: %s", self.status_path, exc)
            self._status_failing = True
        else:
            self._status_failing = False

    def snapshot(self) -> bytes:
        from agent.decode.annotate import encode

        if self.last_view is None:
            raise RuntimeError("no frame from the camera yet")
        gray, codes, reason, view = self.last_view
        return encode(gray, codes, reason, view)

    def shutdown(self) -> None:
        notify("STOPPING=1")
        if self.pending_chip is not None:     # never lose it: stored without the chip, saying why
            pending, self.pending_chip = self.pending_chip, None
            self._store(pending.decision, pending.flags, pending.at,
                        self.chip.outcome(pending.ticket) or absent("the station stopped during the chip read"))
        if self.chip is not None:
            self.chip.stop()
        if self.control is not None:
            self.control.stop()
        if self.grabber is not None:
            self.grabber.stop()
        for out in self.outputs:
            out.writer.stop()
        if self.link is not None:
            self.link.stop()       # publishes 'offline'
        self.feedback.close()      # LEDs off
        if self.voice is not None:
            self.voice.close()
        try:
            depth = self.outbox.depth()
        except OutboxError:
            depth = -1
        self.outbox.close()
        try:
            self.status_path.unlink()
        except OSError:
            pass
        log.info("station stopped: %d check-ins this run, %d queued for the hospital", self.counters.checkins, depth)
