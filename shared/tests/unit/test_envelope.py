import json

import pytest
from pydantic import BaseModel

from switchyard.bus import PoisonMessage, decode_event
from switchyard.envelope import EventCatalog, new_envelope

from ..support import TEST_CATALOG, ThingHappened, ThingHappenedV2


def test_envelope_has_cloudevents_attributes():
    env = new_envelope(
        ThingHappened(thing_id="a"), service="things", subject="a", catalog=TEST_CATALOG
    )
    doc = json.loads(env.to_json())
    assert doc["specversion"] == "1.0"
    assert doc["source"] == "/switchyard/things"
    assert doc["type"] == "test.thing.happened"
    assert (
        doc["dataschema"] == "https://switchyard.dev/contracts/events/test.thing.happened/v1.json"
    )
    assert doc["datacontenttype"] == "application/json"
    assert doc["time"].endswith("Z")
    assert env.headers()["cloudEvents_subject"] == "a"


def test_versions_decode_to_their_own_model():
    v2 = new_envelope(ThingHappenedV2(thing_id="a", reason="r"), service="s", catalog=TEST_CATALOG)
    event = decode_event(v2.to_json(), catalog=TEST_CATALOG)
    assert isinstance(event.data, ThingHappenedV2)


def test_unknown_version_is_poison():
    env = new_envelope(ThingHappened(thing_id="a"), service="s", catalog=TEST_CATALOG)
    doc = json.loads(env.to_json())
    doc["dataschema"] = doc["dataschema"].replace("v1", "v7")
    with pytest.raises(PoisonMessage, match="unknown version"):
        decode_event(json.dumps(doc).encode(), catalog=TEST_CATALOG)


def test_catalog_refuses_badly_named_types_and_double_registration():
    catalog = EventCatalog()
    with pytest.raises(ValueError):
        catalog.register("ThingHappened")

    @catalog.register("a.b.c")
    class One(BaseModel):
        pass

    with pytest.raises(ValueError):

        @catalog.register("a.b.c")
        class Two(BaseModel):
            pass
