"""Config loading: the example file is valid, and every kind of mistake is named with key and line."""

from pathlib import Path

import pytest

from agent.config import Config, ConfigError, load_config, parse_config

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
