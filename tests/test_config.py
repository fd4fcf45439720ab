"""Config loading: the example file is valid, and every kind of mistake is named with key and line."""

from pathlib import Path

import pytest

from agent.config import Config, ConfigError, load_config, parse_config
from support.daemon import cli

ROOT = Path(__file__).resolve().parents[1]


def errors_of(text):
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "c.toml")
    return exc.value.errors


def test_example_config_is_valid_and_complete():
    cfg = load_config(ROOT / "config" / "config.toml")
    assert cfg.station.id == "counter-01"
    assert cfg.camera.source == "picamera2"
    assert cfg.mqtt is not None and cfg.mqtt.port == 8883 and cfg.mqtt.allow_insecure is False
    # every key of every section is documented in the example
    text = (ROOT / "config" / "config.toml").read_text()
    import dataclasses
    from agent.config import SECTIONS
    for name, cls in SECTIONS.items():
        assert f"[{name}]" in text
        for f in dataclasses.fields(cls):
            assert f"\n{f.name} = " in text, f"{name}.{f.name} missing from config/config.toml"


def test_empty_config_gives_defaults_and_no_broker():
    cfg = parse_config("")
    assert isinstance(cfg, Config) and cfg.mqtt is None and cfg.checkin.cooldown_s == 10


def test_int_accepted_for_float():
    assert parse_config("[camera]\nfps = 15\n").camera.fps == 15.0


def test_unknown_key_and_section_named_with_line():
    errs = errors_of("[station]\nid = 'x'\nidd = 'y'\n\n[mqt]\nhost = 'h'\n")
    assert errs[0].startswith("3: unknown key station.idd")
    assert errs[1].startswith("5: unknown section [mqt]")


@pytest.mark.parametrize("text,line,needle", [
    ("[camera]\nfps = 'fast'\n", 2, "camera.fps must be a number"),
    ("[camera]\nsource = 'webcam'\n", 2, "must be one of picamera2, v4l2, replay"),
    ("[mqtt]\nport = 70000\n", 2, "mqtt.port must be <= 65535"),
    ("[mqtt]\nallow_insecure = 'yes'\n", 2, "must be true or false"),
    ("[checkin]\n\ncooldown_s = -1\n", 3, "must be >= 0"),
    ("[feedback]\ngreen_pin = true\n", 2, "must be a whole number"),
    ("[station]\nid = 'a/b'\n", 2, "station.id may use"),
    ("[mqtt]\ntopic_prefix = 'a/#'\n", 2, "topic_prefix must not contain"),
    ("[camera]\nsource = 'replay'\npath = '/no/such/folder'\n", 3, "does not exist"),
    ("station = 3\n", 1, "station must be a [section]"),
])
def test_bad_values_named_with_line(text, line, needle):
    errs = errors_of(text)
    assert len(errs) == 1 and errs[0].startswith(f"{line}: ") and needle in errs[0], errs


def test_toml_syntax_error_has_line():
    errs = errors_of("[station]\nid = \n")
    assert "TOML syntax" in errs[0] and "line 2" in errs[0]


def test_unreadable_and_binary_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"[station]\n\xff\xfe\n")
    with pytest.raises(ConfigError, match="2: not UTF-8"):
        load_config(bad)


def documented_defaults() -> dict[str, dict[str, object]]:
    """Every key config/config.toml shows, with its value, except those marked as examples
    ('# example' on the line, or '(example)' in the comment just above it)."""
    import tomllib

    text = (ROOT / "config" / "config.toml").read_text()
    lines = text.splitlines()
    data = tomllib.loads(text)
    from agent.config import _key_lines
    where = _key_lines(text)
    out: dict[str, dict[str, object]] = {}
    for section, values in [(k, v) for k, v in data.items() if k != "output"] + \
            [(f"output.{k}", v) for k, v in data.get("output", {}).items()]:
        for key, value in values.items():
            n = where[f"{section}.{key}"]
            above = lines[n - 2] if n >= 2 else ""
            if "# example" in lines[n - 1] or (above.lstrip().startswith("#") and "(example)" in above):
                continue
            out.setdefault(section, {})[key] = value
    return out


def test_every_documented_default_is_the_codes_default():
    """config/config.toml says 'every key below shows its default unless marked example': the
    code's defaults must be those (a station config without [camera] source must not replay the
    demo patients to the hospital, nor keep its outbox in ./state)."""
    import dataclasses

    from agent.config import ATTRS, SECTIONS

    documented = documented_defaults()
    assert documented["camera"]["source"] == "picamera2" and documented["feedback"]["backend"] == "gpio"
    checked = 0
    for section, values in documented.items():
        fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
        for key, value in values.items():
            default = fields[key].default
            if isinstance(default, tuple):      # list values have immutable tuple defaults in the code
                default = list(default)
            assert type(default)(value) == default if isinstance(default, float) else value == default, \
                f"[{section}] {key}: config/config.toml shows {value!r}, the code's default is {default!r}"
            checked += 1
    assert checked > 60
    cfg = Config()
    assert (cfg.camera.source, cfg.feedback.backend, cfg.station.state_dir) == \
        ("picamera2", "gpio", "/var/lib/scanner-agent")
    assert set(ATTRS) <= set(documented)


def test_the_demo_chooses_replay_and_console_explicitly():
    from agent.cli import demo_config

    cfg = demo_config()
    assert (cfg.camera.source, cfg.camera.path, cfg.feedback.backend, cfg.station.state_dir, cfg.mqtt) == \
        ("replay", "", "console", "state", None)


def test_bundled_demo_frames_with_a_broker_are_refused():
    """Replay without camera.path replays the bundled demo patients: with [mqtt] they would reach
    the hospital as real check-ins, so the config is refused; naming frames on purpose is fine."""
    errs = errors_of("[camera]\nsource = 'replay'\n[mqtt]\nhost = 'h'\ntls = false\nallow_insecure = true\n")
    assert len(errs) == 1 and errs[0].startswith("2: ") and "bundled demo patients" in errs[0], errs
    frames = ROOT / "agent" / "samples" / "frames"
    ok = parse_config(f"[camera]\nsource = 'replay'\npath = '{frames}'\n[mqtt]\nhost = 'h'\ntls = false\n"
                      "allow_insecure = true\n")
    assert ok.camera.path == str(frames)
    assert parse_config("[camera]\nsource = 'replay'\n").mqtt is None     # the demo: no broker, fine


# --- 5: NaN and infinity -------------------------------------------------------------------------

@pytest.mark.parametrize("key, value", [("checkin.cooldown_s", "nan"), ("outbox.retention_s", "nan"),
                                        ("outbox.retention_s", "inf"), ("camera.fps", "-inf")])
def test_nan_and_infinity_are_config_errors(key, value):
    section, name = key.split(".")
    with pytest.raises(ConfigError) as err:
        parse_config(f"[{section}]\n{name} = {value}\n")
    assert f"{key} must be a finite number" in str(err.value)


# --- 12: config gaps -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, needle", [
    ('[station]\nid = ""\n', "station.id may use"),
    ('[mqtt]\ntopic_prefix = "a\\u0000b"\n', "topic_prefix must not contain"),
    ('[mqtt]\ntopic_prefix = "a\\nb"\n', "topic_prefix must not contain"),
    ('[mqtt]\ntopic_prefix = "a/+/b"\n', "topic_prefix must not contain"),
    ('[mqtt]\ntopic_prefix = "a/#"\n', "topic_prefix must not contain"),
    ('[mqtt]\ntopic_prefix = ""\n', "topic_prefix must not be empty"),
    ('[mqtt]\ntls = false\n', "allow_insecure = true"),
])
def test_config_gaps_are_errors(text, needle):
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert needle in str(err.value)


def test_a_byte_order_mark_is_accepted(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_bytes(b"\xef\xbb\xbf[station]\nid = \"counter-bom\"\n")
    assert load_config(conf).station.id == "counter-bom"


# --- 13: config check refuses what run refuses --------------------------------------------------

@pytest.mark.parametrize("extra, needle", [
    ('[station]\nstate_dir = "/proc/scanner-agent/state"\n[feedback]\nbackend = "none"\n',
     "station.state_dir '/proc/scanner-agent/state' does not exist and cannot be created"),
    ('[station]\nstate_dir = "/proc/self"\n[feedback]\nbackend = "none"\n',
     "station.state_dir '/proc/self' is not writable"),
    ('[station]\nstate_dir = "STATE"\n[feedback]\nbackend = "gpio"\ngreen_pin = 17\nred_pin = 17\n',
     "feedback.red_pin = 17 is already feedback.green_pin"),
    ('[station]\nstate_dir = "STATE"\n[feedback]\nbackend = "gpio"\namber_pin = 22\n',
     "feedback.buzzer_pin = 22 is already feedback.amber_pin"),
])
def test_config_check_refuses_a_state_dir_that_cannot_be_made_and_a_shared_pin(tmp_path, extra, needle):
    conf = tmp_path / "c.toml"
    conf.write_text(extra.replace("STATE", str(tmp_path / "state")))
    check = cli("config", "check", str(conf))
    assert check.returncode == 2 and needle in check.stderr and "Traceback" not in check.stderr, check.stderr
    assert not list(tmp_path.glob("**/.scanner-agent-check-*"))


def test_a_full_disk_is_not_a_config_error(full_state_dir):
    """`config check`, `run` and `status` try to make a folder in state_dir (issue 21). On a full
    disk that fails with ENOSPC: a runtime fault the station reports and recovers from, not a
    config error (exit 2, which systemd never restarts: RestartPreventExitStatus=2)."""
    from agent.config import dir_problem, parse_config

    state = full_state_dir
    with pytest.raises(OSError):
        (state / "one-more").mkdir()
    assert dir_problem(str(state)) is None
    parse_config(f'[station]\nstate_dir = "{state}"\n')   # no ConfigError
