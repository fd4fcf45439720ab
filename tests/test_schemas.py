"""The published contract: schemas are valid, the AsyncAPI document points at them, and a real
check-in built from a card read validates.

The AsyncAPI document is also checked with the official parser (from npm), and
docs/integrating.md's codes and examples against the schemas."""

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest

from agent.cards import read_card
from agent.mqtt.schemas import NAMES, errors, validator
from agent.mqtt.schemas import errors as schema_errors
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


# -- the documents -----------------------------------------------------------------------------

def asyncapi(path: Path) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is needed to run the AsyncAPI parser: apt install nodejs npm, then scripts/setup")
    script = ROOT / "tools" / "asyncapi" / "validate.mjs"
    if not (ROOT / "tools" / "asyncapi" / "node_modules" / "@asyncapi" / "parser").exists():
        pytest.fail("the AsyncAPI parser is not installed: run scripts/setup (npm ci in tools/asyncapi)")
    proc = subprocess.run([node, str(script), str(path)], capture_output=True, text=True, timeout=120)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.docs
def test_asyncapi_document_validates_and_every_example_matches_its_schema(tmp_path):
    report = asyncapi(ROOT / "docs" / "asyncapi.yaml")
    assert report["errors"] == [], report["errors"]
    by_message: dict[str, int] = {}
    for ex in report["examples"]:
        assert schema_errors(ex["message"], ex["payload"]) == [], (ex["message"], ex["name"])
        by_message[ex["message"]] = by_message.get(ex["message"], 0) + 1
    assert set(by_message) == set(NAMES), "every message has examples"
    kinds = {ex["payload"]["kind"] for ex in report["examples"] if ex["message"] == "checkin"}
    assert kinds == {"bhyt", "cccd"}
    # the parser does find errors: a channel that points nowhere
    broken = tmp_path / "docs" / "asyncapi.yaml"
    broken.parent.mkdir()
    (tmp_path / "agent").symlink_to(ROOT / "agent")
    broken.write_text((ROOT / "docs" / "asyncapi.yaml").read_text().replace(
        "channel: {$ref: '#/channels/health'}", "channel: {$ref: '#/channels/nowhere'}"))
    assert asyncapi(broken)["errors"], "the parser accepted a dangling reference"


def test_the_guide_documents_every_code_the_station_sends():
    """docs/integrating.md lists every warning code, fault code, ignored reason and status reason."""
    guide = (ROOT / "docs" / "integrating.md").read_text()
    import re
    codes = set(re.findall(r'warn\("([a-z_]+)"', "".join(p.read_text() for p in (ROOT / "agent" / "cards").glob("*.py"))))
    health = json.loads((ROOT / "agent" / "schemas" / "health.json").read_text())
    ignored = json.loads((ROOT / "agent" / "schemas" / "ignored.json").read_text())
    codes |= set(health["properties"]["fault_codes"]["items"]["enum"])
    codes |= set(ignored["properties"]["reason"]["enum"])
    assert len(codes) > 20
    missing = sorted(c for c in codes if f"`{c}`" not in guide)
    assert not missing, f"not in docs/integrating.md: {missing}"
    checkin = json.loads((ROOT / "agent" / "schemas" / "checkin.json").read_text())
    for part in checkin["allOf"]:
        for name in part["then"]["properties"]["card"]["properties"]:
            assert f"`{name}`" in guide, f"card field {name} not in the guide's field tables"


def test_the_guides_examples_match_the_schemas():
    import re
    guide = (ROOT / "docs" / "integrating.md").read_text()
    blocks = re.findall(r"<!-- example: (\w+) -->\n```json\n(.*?)```", guide, re.S)
    assert {name for name, _ in blocks} == set(NAMES), "an example of every message"
    for name, text in blocks:
        assert schema_errors(name, json.loads(text)) == [], (name, text[:80])
