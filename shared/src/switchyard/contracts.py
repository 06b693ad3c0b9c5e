"""Event contracts generated from the code: JSON Schemas and an AsyncAPI 3.0 document.

    switchyard-contracts export   write contracts/events/ from the event catalog
    switchyard-contracts check    exit 1 (with a diff summary) when contracts/ and code differ

The committed files are what other teams read; a test runs ``check`` so code and
contracts never drift.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from switchyard.envelope import (
    CATALOG,
    HEADER_ATTRIBUTES,
    HEADER_PREFIX,
    Envelope,
    EventCatalog,
    EventSpec,
)
from switchyard.sockets.api import SocketApi

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
EXCHANGE = "switchyard.events"


def _load_all_events() -> None:
    import switchyard.events  # noqa: F401  (registers every event type)


def data_schema(spec: EventSpec) -> dict[str, Any]:
    schema = spec.model.model_json_schema(mode="serialization")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": spec.dataschema,
        "title": f"{spec.type} v{spec.version}",
        "description": spec.description,
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def envelope_schema() -> dict[str, Any]:
    schema = Envelope.model_json_schema(mode="serialization")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": "https://switchyard.dev/contracts/events/envelope.json",
        "title": "Switchyard event envelope (CloudEvents 1.0, structured JSON)",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def _message_name(spec: EventSpec) -> str:
    return f"{spec.type}.v{spec.version}"


EXAMPLE_TIME = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def data_examples(spec: EventSpec) -> list[dict[str, Any]]:
    """The examples the event model declares (``model_config = examples(...)``)."""
    examples = spec.model.model_json_schema(mode="serialization").get("examples", [])
    return [dict(example) for example in examples]


def envelope_examples(spec: EventSpec) -> list[Envelope]:
    """Each data example in a whole envelope, as it travels (a fixed id per example, so
    the generated contracts do not change from run to run)."""
    return [
        Envelope(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{spec.dataschema}#example-{number}")),
            source=f"/switchyard/{spec.producer}",
            type=spec.type,
            time=EXAMPLE_TIME,
            subject=data.get("user_id"),
            dataschema=spec.dataschema,
            data=data,
        )
        for number, data in enumerate(data_examples(spec), start=1)
    ]


def _message_examples(spec: EventSpec) -> list[dict[str, Any]]:
    return [
        {
            "name": f"{spec.type}-example-{number}",
            "headers": envelope.headers(),
            "payload": json.loads(envelope.to_json()),
        }
        for number, envelope in enumerate(envelope_examples(spec), start=1)
    ]


def _socket_schema(model: type[Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """``model``'s JSON Schema among the components (nested models too); a $ref to it."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, nested in schema.pop("$defs", {}).items():
        schemas.setdefault(name, nested)
    schemas.setdefault(model.__name__, schema)
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def socket_channels(
    apis: Iterable[SocketApi], schemas: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Servers, channels, operations and messages of the Socket.IO APIs: each client event
    is an operation the service receives, replying with its ack (or the error ack)."""
    servers: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for api in apis:
        server = f"{api.service}-socketio"
        servers[server] = {
            "host": "localhost:8080",
            "pathname": api.path,
            "protocol": "ws",
            "description": f"Socket.IO through the gateway. {api.description}",
        }
        channel_name = f"{api.service}.socketio"
        channel: dict[str, Any] = {
            "address": api.path,
            "description": f"The {api.service} service's Socket.IO namespace `/`.",
            "servers": [{"$ref": f"#/servers/{server}"}],
            "messages": {},
        }
        error = f"{api.service}.socketio.error"
        messages[error] = {
            "name": "ack",
            "title": "Error ack",
            "summary": "A refused event: the socket stays open.",
            "payload": _socket_schema(api.error_ack, schemas),
        }
        channel["messages"][error] = {"$ref": f"#/components/messages/{error}"}
        for event in api.events:
            key = f"{api.service}.socketio.{event.direction}.{event.name}"
            messages[key] = {
                "name": event.name,
                "title": f"{event.name} ({'client → server' if event.direction == 'client' else 'server → client'})",
                "summary": event.summary,
                "payload": _socket_schema(event.payload, schemas),
            }
            channel["messages"][key] = {"$ref": f"#/components/messages/{key}"}
            operation: dict[str, Any] = {
                "action": "receive" if event.direction == "client" else "send",
                "title": f"{api.service} {'receives' if event.direction == 'client' else 'emits'} {event.name}",
                "channel": {"$ref": f"#/channels/{channel_name}"},
                "messages": [{"$ref": f"#/channels/{channel_name}/messages/{key}"}],
            }
            if event.ack is not None:
                ack = f"{key}.ack"
                messages[ack] = {
                    "name": "ack",
                    "title": f"{event.name} ack",
                    "payload": _socket_schema(event.ack, schemas),
                }
                channel["messages"][ack] = {"$ref": f"#/components/messages/{ack}"}
                operation["reply"] = {
                    "channel": {"$ref": f"#/channels/{channel_name}"},
                    "messages": [
                        {"$ref": f"#/channels/{channel_name}/messages/{ack}"},
                        {"$ref": f"#/channels/{channel_name}/messages/{error}"},
                    ],
                }
            operations[f"{key}"] = operation
        channels[channel_name] = channel
    return servers, channels, operations, messages


def asyncapi(specs: Iterable[EventSpec], socket_apis: Iterable[SocketApi] = ()) -> dict[str, Any]:
    specs = list(specs)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {"Envelope": {"$ref": "envelope.json"}}
    headers_schema = {
        "type": "object",
        "properties": {HEADER_PREFIX + name: {"type": "string"} for name in HEADER_ATTRIBUTES},
        "required": [
            HEADER_PREFIX + n for n in ("specversion", "id", "source", "type", "time", "dataschema")
        ],
    }
    for spec in specs:
        name = _message_name(spec)
        schema_file = f"{spec.type}.v{spec.version}.json"
        messages[name] = {
            "name": spec.type,
            "title": f"{spec.type} v{spec.version}",
            "summary": spec.description,
            "contentType": "application/cloudevents+json",
            "headers": headers_schema,
            "payload": {
                "allOf": [
                    {"$ref": "envelope.json"},
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": spec.type},
                            "dataschema": {"const": spec.dataschema},
                            "data": {"$ref": schema_file},
                        },
                    },
                ]
            },
            "examples": _message_examples(spec),
        }
        channel = channels.setdefault(
            spec.type,
            {
                "address": spec.type,
                "description": f"Routing key {spec.type} on the {EXCHANGE} topic exchange.",
                "messages": {},
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {
                            "name": EXCHANGE,
                            "type": "topic",
                            "durable": True,
                            "autoDelete": False,
                            "vhost": "/",
                        },
                        "bindingVersion": "0.3.0",
                    }
                },
            },
        )
        channel["messages"][name] = {"$ref": f"#/components/messages/{name}"}
        operation = operations.setdefault(
            f"{spec.producer}.publish.{spec.type}",
            {
                "action": "send",
                "title": f"{spec.producer} publishes {spec.type}",
                "channel": {"$ref": f"#/channels/{spec.type}"},
                "messages": [],
                "bindings": {
                    "amqp": {"deliveryMode": 2, "mandatory": True, "bindingVersion": "0.3.0"}
                },
            },
        )
        operation["messages"].append({"$ref": f"#/channels/{spec.type}/messages/{name}"})
    socket_servers, socket_channels_, socket_operations, socket_messages = socket_channels(
        socket_apis, schemas
    )
    channels.update(socket_channels_)
    operations.update(socket_operations)
    messages.update(socket_messages)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Switchyard events",
            "version": "1.0.0",
            "description": (
                "Events between Switchyard services. Every message is a CloudEvents 1.0 envelope "
                "(structured JSON) whose `data` follows the schema named by `dataschema`; the "
                "attributes also travel as `cloudEvents_<name>` AMQP headers. Persistent, "
                "published with confirms and `mandatory`; consumers own quorum queues "
                "`<service>.<handler>` with retry tiers and a DLQ. The Socket.IO APIs clients "
                "use (channels on the `ws` servers) are described here too: each client event "
                "is an operation the service receives and answers with an ack."
            ),
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": {
            "rabbitmq": {"host": "localhost:5672", "protocol": "amqp", "protocolVersion": "0.9.1"},
            **socket_servers,
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render(catalog: EventCatalog = CATALOG) -> dict[str, str]:
    """Every contract file under ``contracts/events/``, path → content."""
    _load_all_events()
    files: dict[str, str] = {}
    specs = list(catalog)
    for spec in specs:
        files[f"{spec.type}.v{spec.version}.json"] = (
            json.dumps(data_schema(spec), indent=2, sort_keys=True) + "\n"
        )
    files["envelope.json"] = json.dumps(envelope_schema(), indent=2, sort_keys=True) + "\n"
    from switchyard.sockets.chat import SOCKET_APIS

    files["asyncapi.yaml"] = yaml.safe_dump(
        asyncapi(specs, SOCKET_APIS), sort_keys=False, width=100, allow_unicode=True
    )
    return files


def export(directory: Path) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    files = render()
    for stale in directory.glob("*"):
        if stale.is_file() and stale.name not in files:
            stale.unlink()
    for name, content in files.items():
        (directory / name).write_text(content)
    return sorted(files)


def check(directory: Path) -> list[str]:
    """Differences between the committed contracts and the code (empty when in sync)."""
    problems = []
    files = render()
    present = {p.name for p in directory.glob("*") if p.is_file()} if directory.exists() else set()
    for name in sorted(present - set(files)):
        problems.append(f"{name}: committed but no longer produced by the code")
    for name, content in sorted(files.items()):
        path = directory / name
        if not path.exists():
            problems.append(f"{name}: missing — run `make contracts`")
            continue
        committed = path.read_text()
        if committed != content:
            diff = difflib.unified_diff(
                committed.splitlines(), content.splitlines(), "committed", "code", lineterm="", n=1
            )
            problems.append(
                f"{name}: differs from the code — run `make contracts`\n"
                + "\n".join(list(diff)[:40])
            )
    return problems


def default_directory() -> Path:
    here = Path.cwd()
    for candidate in (here, *here.parents):
        if (candidate / "contracts").is_dir() and (candidate / "shared").is_dir():
            return candidate / "contracts" / "events"
    return here / "contracts" / "events"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="switchyard-contracts")
    parser.add_argument("command", choices=["export", "check"])
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args(argv)
    directory = args.dir or default_directory()
    if args.command == "export":
        for name in export(directory):
            print(directory / name)
        return
    problems = check(directory)
    for problem in problems:
        print(problem, file=sys.stderr)
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
