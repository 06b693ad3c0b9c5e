"""Contracts are generated from the code; this fails when they drift."""

from pathlib import Path

from switchyard import contracts
from switchyard.envelope import CATALOG

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


def test_examples_in_the_models_validate():
    """Consumers can rely on the examples: each example in a schema parses with its model."""
    for spec in CATALOG:
        for example in spec.model.model_json_schema().get("examples", []):
            spec.model.model_validate(example)


def test_check_reports_drift(tmp_path):
    contracts.export(tmp_path)
    assert contracts.check(tmp_path) == []
    (tmp_path / "envelope.json").write_text("{}\n")
    (tmp_path / "stale.v1.json").write_text("{}\n")
    problems = contracts.check(tmp_path)
    assert any(p.startswith("envelope.json: differs") for p in problems)
    assert any(p.startswith("stale.v1.json: committed but no longer") for p in problems)
