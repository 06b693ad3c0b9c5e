"""Contracts are generated from the code; this fails when they drift."""

import json
from pathlib import Path

import yaml
from pydantic import BaseModel

from switchyard import contracts
from switchyard.envelope import CATALOG, Envelope, EventCatalog, EventSpec

ROOT = Path(__file__).resolve().parents[3]


def test_committed_contracts_match_the_code():
    problems = contracts.check(ROOT / "contracts" / "events")
    assert problems == [], "\n".join(problems)


def test_every_event_has_a_schema_and_a_channel():
    files = contracts.render()
    document = contracts.asyncapi(CATALOG)
    assert document["asyncapi"] == "3.0.0"
    for spec in CATALOG:
        assert f"{spec.type}.v{spec.version}.json" in files
        assert spec.type in document["channels"]
        assert document["channels"][spec.type]["bindings"]["amqp"]["exchange"]["type"] == "topic"
        assert f"{spec.producer}.publish.{spec.type}" in document["operations"]


def _specs() -> list[EventSpec]:
    import switchyard.events  # noqa: F401  (registers every event type)

    specs = list(CATALOG)
    assert specs, "the catalog is empty"
    return specs


def test_every_event_model_carries_examples_that_validate():
    """Consumers can rely on the examples: every event model declares at least one, and
    each parses with its model from JSON, as a consumer receives it."""
    for spec in _specs():
        examples = contracts.data_examples(spec)
        assert examples, f"{spec.type} v{spec.version} has no example: add examples(...)"
        for example in examples:
            spec.model.model_validate_json(json.dumps(example))


def test_examples_are_exported_into_the_schemas_and_the_asyncapi_messages():
    files = contracts.render()
    messages = yaml.safe_load(files["asyncapi.yaml"])["components"]["messages"]
    for spec in _specs():
        examples = contracts.data_examples(spec)
        schema = json.loads(files[f"{spec.type}.v{spec.version}.json"])
        assert schema["examples"] == examples
        message_examples = messages[f"{spec.type}.v{spec.version}"]["examples"]
        assert [example["payload"]["data"] for example in message_examples] == examples
        for example in message_examples:
            # What a consumer does with a message: envelope first, then the typed data.
            envelope = Envelope.model_validate_json(json.dumps(example["payload"]))
            assert envelope.type == spec.type and envelope.version == spec.version
            assert isinstance(CATALOG.decode(envelope), spec.model)
            headers = example["headers"]
            assert headers["cloudEvents_type"] == spec.type
            assert headers["cloudEvents_id"] == envelope.id


def test_a_model_without_examples_is_reported():
    catalog = EventCatalog()

    @catalog.register("test.thing.happened")
    class ThingHappened(BaseModel):
        """Something happened."""

        thing_id: str

    (spec,) = list(catalog)
    assert contracts.data_examples(spec) == []
    assert contracts.envelope_examples(spec) == []


def test_check_reports_drift(tmp_path):
    contracts.export(tmp_path)
    assert contracts.check(tmp_path) == []
    (tmp_path / "envelope.json").write_text("{}\n")
    (tmp_path / "stale.v1.json").write_text("{}\n")
    problems = contracts.check(tmp_path)
    assert any(p.startswith("envelope.json: differs") for p in problems)
    assert any(p.startswith("stale.v1.json: committed but no longer") for p in problems)
