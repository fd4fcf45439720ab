"""What the outputs check of a config: every template parses, a keyboard is asked to type only
what its layout can. Run by config's parse (as one of its `checks`) through the loaders here, so
the problems are listed with the rest, with line numbers; config itself never imports outputs."""

from __future__ import annotations

from pathlib import Path

from agent import config
from agent.config import Config
from agent.outputs import hid
from agent.outputs.template import ASCII_FIELDS, KEYS, TemplateError, literal_text, templates, typed_fields


def config_problems(cfg: Config) -> list[tuple[str, str]]:
    """What the keyboard or serial output could not do, as (config key, message)."""
    out = []
    for section, oc in (("output.keyboard", cfg.keyboard), ("output.serial", cfg.serial)):
        if not oc.enabled:
            continue
        for kind, template in templates(oc).items():
            key = f"{section}.template_{kind}"
            try:
                fields = typed_fields(template)
            except TemplateError as exc:
                out.append((key, f"{key}: {exc}"))
                continue
            if section == "output.keyboard":
                bad = [f for f in fields if f not in ASCII_FIELDS[kind] and f not in KEYS]
                if bad:
                    out.append((key, f"{key}: a keyboard can only type ASCII fields; {{{bad[0]}}} may hold "
                                     f"Vietnamese letters (use [output.serial] for those)"))
        if section == "output.keyboard":
            texts = {"prefix": oc.prefix, "suffix": oc.suffix,
                     **{f"template_{kind}": literal_text(t) for kind, t in templates(oc).items()}}
            for name, literal in texts.items():
                if missing := hid.typeable(literal, oc.layout):
                    out.append((f"{section}.{name}", f"{section}.{name}: a {oc.layout.upper()} keyboard cannot "
                                                    f"type {missing!r}"))
    return out


#: every check the station's modules make of a config, beyond config's own
CHECKS = (config_problems,)


def load_config(path: Path | str, *, station: bool = True) -> Config:
    """agent.config.load_config with the outputs' checks: what the daemon and IT's commands load."""
    return config.load_config(path, station=station, checks=CHECKS)


def parse_config(text: str, path: Path | str = "<config>", *, station: bool = True) -> Config:
    """agent.config.parse_config with the outputs' checks."""
    return config.parse_config(text, path, station=station, checks=CHECKS)
