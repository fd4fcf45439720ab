"""The published contract: schemas are valid, the AsyncAPI document points at them, and a real
check-in built from a card read validates."""

from pathlib import Path

import jsonschema
import pytest

from agent.cards import read_card
from agent.mqtt.schemas import NAMES, errors, validator
from support.payloads import BHYT10, BHYT15, CCCD

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", NAMES)
def test_schema_is_valid_json_schema(name):
    jsonschema.Draft202012Validator.check_schema(validator(name).schema)


def test_asyncapi_references_every_schema():
    text = (ROOT / "docs" / "asyncapi.yaml").read_text()
    for name in NAMES:
        assert f"../agent/schemas/{name}.json" in text
        assert (ROOT / "agent" / "schemas" / f"{name}.json").exists()


@pytest.mark.parametrize("payload", [BHYT15, BHYT10, CCCD])
def test_checkin_from_a_real_read_validates(payload):
    event = {"schema": "1.0", "id": "019ab1c2-7d3e-7f00-8a1b-2c3d4e5f6a7b", "seq": 1, "station": "counter-01",
             "read_at": "2026-11-24T08:15:02.512+07:00", "clock_synced": True, **read_card(payload).to_dict()}
    assert errors("checkin", event) == []
    broken = {**event, "verdict": "invalid"}  # invalid reads are never check-ins
    assert errors("checkin", broken)
    no_tz = {**event, "read_at": "2026-11-24T08:15:02"}
    assert errors("checkin", no_tz)
