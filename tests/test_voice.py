"""Voice prompts: chosen per signal and reason, rate-limited, silent with nobody at the counter
(a fake player); one real `aplay` to ALSA's null device; the espeak-ng default set, non-silent;
a missing device a warning, never an LED fault."""

from __future__ import annotations

import io
import random
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from agent.admin import hardware
from agent.capture import Frame
from agent.checkin import Action, Decision
from agent.config import Config
from agent.feedback import Feedback, NoOutput, Signal
from agent.feedback.audio import AplayPlayer, probe, scaled_wav
from agent.feedback.prompts import generate
from agent.feedback.voice import PROMPTS, Voice, prompt_name
from agent.station import PRESENT_S, Station


def tone(path: Path, seconds: float = 0.3, amplitude: int = 8000, rate: int = 22050) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    samples = (amplitude * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


@pytest.fixture
def prompts(tmp_path) -> Path:
    folder = tmp_path / "prompts"
    folder.mkdir()
    for name in PROMPTS:
        tone(folder / f"{name}.wav")
    return folder


class FakePlayer:
    def __init__(self):
        self.played: list[tuple[str, int]] = []
        self.warning = None
        self.closed = False

    def play(self, path: Path, volume: int) -> None:
        self.played.append((path.stem, volume))

    def close(self) -> None:
        self.closed = True


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_prompt_per_signal_and_reason():
    assert prompt_name(Signal.TRY_AGAIN, "glare") == "try_again-glare"
    assert prompt_name(Signal.TRY_AGAIN, "closer") == "try_again-closer"
    assert prompt_name(Signal.TRY_AGAIN, None) == "try_again-unknown"
    assert prompt_name(Signal.TRY_AGAIN, "nonsense") == "try_again-unknown"
    assert prompt_name(Signal.CHECKIN_WARNING, "not_yet_valid") == "checkin_warning-not_yet_valid"
    assert prompt_name(Signal.CHECKIN_WARNING, "expired") == "checkin_warning"
    for staff in (Signal.READY, Signal.FAULT, Signal.BROKER_DOWN, Signal.VERDICT_ACCEPTED):
        assert prompt_name(staff) is None
    for reason in ("closer", "glare", "dim", "still", "unknown"):
        assert f"try_again-{reason}" in PROMPTS
    assert PROMPTS["try_again-closer"] == "Mời quý khách đưa điện thoại lại gần"


def test_same_guidance_at_most_once_every_few_seconds(prompts):
    player, clock = FakePlayer(), FakeClock()
    voice = Voice(player, prompts, volume=60, repeat_s=5.0, clock=clock)
    assert voice.say(Signal.TRY_AGAIN, "glare") == "try_again-glare"
    clock.t += 2
    assert voice.say(Signal.TRY_AGAIN, "glare") is None            # the same, too soon
    assert voice.say(Signal.TRY_AGAIN, "closer") == "try_again-closer"   # another guidance: at once
    clock.t += 3.1
    assert voice.say(Signal.TRY_AGAIN, "glare") == "try_again-glare"
    assert voice.say(Signal.CHECKIN) == "checkin"
    assert voice.say(Signal.CHECKIN) == "checkin"                   # each check-in is spoken
    assert player.played == [("try_again-glare", 60), ("try_again-closer", 60), ("try_again-glare", 60),
                             ("checkin", 60), ("checkin", 60)]


def test_silent_with_nobody_at_the_counter_and_for_staff_signals(prompts):
    player = FakePlayer()
    voice = Voice(player, prompts, clock=FakeClock())
    assert voice.say(Signal.TRY_AGAIN, "dim", present=False) is None
    assert voice.say(Signal.FAULT) is None and voice.say(Signal.READY) is None
    assert player.played == []


def test_a_missing_prompt_file_is_a_warning(prompts):
    (prompts / "try_again-dim.wav").unlink()
    voice = Voice(FakePlayer(), prompts, clock=FakeClock())
    assert voice.say(Signal.TRY_AGAIN, "dim") is None
    assert "try_again-dim" in voice.warning


def test_hospital_recording_without_a_reason_falls_back_to_the_signal(tmp_path):
    tone(tmp_path / "try_again.wav")
    player = FakePlayer()
    assert Voice(player, tmp_path, clock=FakeClock()).say(Signal.TRY_AGAIN, "still") == "try_again-still"
    assert player.played == [("try_again", 80)]


def test_volume_scales_the_samples(tmp_path):
    path = tone(tmp_path / "t.wav", amplitude=10000)
    with wave.open(io.BytesIO(scaled_wav(path, 50))) as w:
        half = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert 4900 <= np.abs(half).max() <= 5000
    assert scaled_wav(path, 100) == path.read_bytes()
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    with pytest.raises(ValueError):
        scaled_wav(tmp_path / "bad.wav", 50)


def test_real_aplay_to_the_null_device(tmp_path):
    player = AplayPlayer("null")
    player.play(tone(tmp_path / "a.wav", 0.2), 80)
    assert player.wait(timeout=10) == 0
    assert player.warning is None
    assert probe("null") is None


def test_a_newer_prompt_interrupts_the_older(tmp_path):
    # ALSA's null device takes a 20 s prompt in milliseconds, so a real aplay may have finished
    # before the second prompt (seen under load): a stand-in that plays in real time, as a sound
    # card does (22050 Hz, 16-bit mono: 44100 bytes a second)
    paced = tmp_path / "aplay"
    paced.write_text('#!/bin/sh\nn=$(wc -c)\nsleep $((n / 44100))\n')
    paced.chmod(0o755)
    player = AplayPlayer("null", command=str(paced))
    player.play(tone(tmp_path / "long.wav", 20.0), 80)
    first = player._proc
    player.play(tone(tmp_path / "short.wav", 0.1), 80)
    assert first.returncode is not None and first.returncode < 0     # killed, not played to the end
    assert player.wait(timeout=10) == 0 and player.warning is None


def test_a_missing_device_is_a_warning(tmp_path):
    player = AplayPlayer("no_such_device")
    player.play(tone(tmp_path / "a.wav", 0.1), 80)
    player.wait(timeout=10)
    assert player.warning and "no_such_device" in player.warning
    assert "no_such_device" in probe("no_such_device")


def test_espeak_ng_default_set_is_complete_and_not_silent(tmp_path):
    folder = tmp_path / "prompts"
    (folder).mkdir()
    tone(folder / "checkin.wav")                                  # the hospital's own recording
    own = (folder / "checkin.wav").read_bytes()
    written = generate(folder)
    assert set(written) == set(PROMPTS) - {"checkin"}
    assert (folder / "checkin.wav").read_bytes() == own           # never overwritten
    for name in written:
        with wave.open(str(folder / f"{name}.wav")) as w:
            seconds = w.getnframes() / w.getframerate()
            samples = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32)
        rms = float(np.sqrt(np.mean(samples ** 2)))
        assert 0.5 < seconds < 8, (name, seconds)
        assert rms > 500, (name, rms)                              # speech, not silence
    sox = subprocess.run(["sox", str(folder / "try_again-glare.wav"), "-n", "stat"], capture_output=True,
                         text=True)
    assert sox.returncode == 0
    rms_sox = float(next(l for l in sox.stderr.splitlines() if l.startswith("RMS     amplitude")).split()[-1])
    assert rms_sox > 0.02


# --- in the station ---------------------------------------------------------------------------

def make_station(tmp_path, prompts, device="null"):
    cfg = Config()
    cfg.station.state_dir = str(tmp_path / "state")
    cfg.feedback.backend = "none"
    player = FakePlayer()
    # the voice's clock is the frames' (the tests' frame times), not the wall's: under emulation
    # 40 frames take longer than voice_repeat_s
    stations: list[Station] = []
    voice = Voice(player, prompts, clock=lambda: stations[0]._frame_t if stations else 0.0)
    stations.append(Station(cfg, feedback=Feedback(NoOutput()), voice=voice))
    return stations[0], player


def test_try_again_speaks_its_reason_only_while_somebody_is_there(tmp_path, prompts):
    st, player = make_station(tmp_path, prompts)
    try:
        gray = np.full((120, 160), 128, np.uint8)
        st.step(Frame(gray, 0.0))                    # first frame: the scene counts as changed
        st._act(Decision(Action.TRY_AGAIN, reason="glare"))
        assert player.played[-1][0] == "try_again-glare"
        assert st.counters.guidance == {"glare": 1}
        assert st.counters.last_guidance[-1]["reason"] == "glare"
        st.step(Frame(gray, PRESENT_S + 10))         # nothing moved since: nobody at the counter
        st._act(Decision(Action.TRY_AGAIN, reason="closer"))
        assert [p for p, _ in player.played] == ["try_again-glare"]
        assert st.counters.guidance == {"glare": 1, "closer": 1}
        status = st.status()
        assert [g["reason"] for g in status.counters.last_guidance] == ["glare", "closer"]
    finally:
        st.shutdown()


def test_missing_audio_device_warns_in_status_never_on_the_leds(tmp_path, prompts):
    cfg = Config()
    cfg.station.state_dir = str(tmp_path / "state")
    cfg.feedback.backend = "none"
    player = AplayPlayer("no_such_device")
    st = Station(cfg, feedback=Feedback(NoOutput()), voice=Voice(player, prompts))
    try:
        st._say(Signal.CHECKIN, present=True)
        player.wait(timeout=10)
        assert any(f.code == "voice" for f in st.fault_items())
        assert st.fault_items(leds=True) == []
    finally:
        st.shutdown()


def test_doctor_and_feedback_test_with_the_null_device(tmp_path, capsys):
    folder = tmp_path / "prompts"
    folder.mkdir()
    for name in PROMPTS:
        tone(folder / f"{name}.wav", 0.05)
    conf = tmp_path / "c.toml"
    conf.write_text(f'[station]\nstate_dir = "{tmp_path}/state"\n[feedback]\nbackend = "none"\nvoice = true\n'
                    f'voice_dir = "{folder}"\nvoice_device = "null"\n')
    from agent.admin.doctor import check_voice
    from agent.config import load_config
    cfg = load_config(conf)
    check = check_voice(cfg)
    assert check.ok and not check.warning, check
    cfg.feedback.voice_device = "no_such_device"
    check = check_voice(cfg)
    assert check.ok and check.warning and "no_such_device" in check.detail and check.line().startswith("warn")
    assert hardware.voice_test(load_config(conf).feedback) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in PROMPTS) and PROMPTS["try_again-dim"] in out


def test_fleet_reports_a_voice_problem_as_a_warning_not_critical():
    from agent.admin.fleet import CRITICAL, WARNING, Station as Seen, assess

    def level(codes, faults):
        seen = Seen("s1")
        seen.status = {"state": "online", "since": "2026-11-29T08:00:00+07:00"}
        seen.health = {"faults": faults, "fault_codes": codes, "at": "2026-11-29T08:00:00+07:00",
                       "queue_depth": 0, "oldest_undelivered_age_s": None, "clock_synced": True}
        return assess({"s1": seen})[0].level
    assert level(["voice"], ["voice: aplay -D default: audio open error"]) == WARNING
    assert level(["voice", "camera"], ["voice: ...", "camera: no frames"]) == CRITICAL


def test_a_glare_the_reader_cannot_read_past_speaks_the_glare_prompt_once(tmp_path, prompts):
    """End to end: frames through the station's real decoder and presenter to the voice."""
    from test_guidance import frame

    gray, _ = frame(4, glare=6.0)
    st, player = make_station(tmp_path, prompts)
    st.presenter.try_again_every_s = 1.0                 # the amber blink every second...
    try:
        decisions = []
        for i in range(40):                              # 4 s at 10 fps, the phone held still
            decisions += st.step(Frame(gray, i * 0.1))
        tries = [d for d in decisions if d.action == Action.TRY_AGAIN]
        assert len(tries) >= 2 and all(d.reason == "glare" for d in tries)
        assert [p for p, _ in player.played] == ["try_again-glare"]   # ...the voice once in voice_repeat_s
        assert st.counters.guidance["glare"] == len(tries)
    finally:
        st.shutdown()


# --- issue 32 item 9: a damaged prompt file ---------------------------------------------------

def damaged(good: bytes, rng: random.Random) -> bytes:
    """A prompt file as a bad copy or a bad recorder leaves it: cut short, or bits flipped in its
    44-byte header (chunk sizes, format, channels, rate)."""
    if rng.random() < 0.3:
        return good[:rng.randrange(0, 60)]
    bad = bytearray(good)
    for _ in range(rng.randrange(1, 4)):
        bad[rng.randrange(0, 44)] ^= 1 << rng.randrange(8)
    return bytes(bad)


def test_a_damaged_prompt_file_is_a_clear_warning_never_an_exception(tmp_path, capsys):
    """A malformed WAV in the voice folder raised a RuntimeError or struct.error the player did not
    catch (the wave module's own, for a chunk running past the end or a cut header): `feedback
    test` crashed, and the station's warning read "voice: RuntimeError: ". 400 damaged copies from
    a seed: each is played (a WAV again) or refused with the file's name and why."""
    good = tone(tmp_path / "good.wav", 0.05).read_bytes()
    runs_past = bytearray(good)
    runs_past[16:20] = (1000).to_bytes(4, "little")                 # the fmt chunk says 1000 bytes
    path = tmp_path / "checkin.wav"
    path.write_bytes(runs_past)
    player = AplayPlayer("null")
    player.play(path, 80)                                           # the station's player
    assert player.warning == f"voice: {path}: not a WAV file aplay can play (a chunk runs past the end of the file)"
    rng = random.Random(32)
    refused = 0
    for _ in range(400):
        path.write_bytes(damaged(good, rng))
        for volume in (50, 100):
            try:
                out = scaled_wav(path, volume)
            except ValueError as exc:                              # BadWav: the file and why
                assert str(path) in str(exc) and len(str(exc)) > len(str(path)) + 10, exc
                refused += 1
                continue
            with wave.open(io.BytesIO(out)) as w:                  # what aplay gets is a WAV
                assert w.getnframes() > 0
    assert refused > 400, refused                                   # most copies are refused, not played

    folder = tmp_path / "prompts"
    folder.mkdir()
    for name in PROMPTS:
        (folder / f"{name}.wav").write_bytes(good)
    (folder / "checkin.wav").write_bytes(runs_past)
    fcfg = Config().feedback
    fcfg.voice, fcfg.voice_dir, fcfg.voice_device = True, str(folder), "null"
    assert hardware.voice_test(fcfg) == 1                            # `feedback test`: no traceback
    out = capsys.readouterr().out
    assert f"{folder / 'checkin.wav'}: not a WAV file aplay can play (a chunk runs past the end" in out
    assert PROMPTS["try_again-dim"] in out                          # and the prompts after it still play
    voice = Voice(AplayPlayer("null"), folder)                      # the station's warning (status, health)
    assert voice.say(Signal.CHECKIN) == "checkin"
    assert voice.warning == f"voice: {folder / 'checkin.wav'}: not a WAV file aplay can play (a chunk runs past the " \
                            "end of the file)"
    from agent.admin.doctor import check_voice
    cfg = Config()
    cfg.feedback = fcfg
    check = check_voice(cfg)
    assert check.ok and check.warning and f"{folder / 'checkin.wav'}" in check.detail, check
    assert "a chunk runs past the end" in check.detail
