"""outputs: hand each check-in to the counter PC like a USB scanner does, beside MQTT: typed as
keystrokes on a USB HID keyboard or sent on a serial port (devices.py builds both from the config;
hid.py the key reports, template.py the text, writer.py the supervised writer thread, checks.py
the config's checks of the templates). The outbox stays the record; these are a convenience that
may drop a line, never a check-in."""

from agent.outputs.template import TemplateError, render, typed_fields
from agent.outputs.writer import DeviceWriter

__all__ = ["DeviceWriter", "TemplateError", "render", "typed_fields"]
