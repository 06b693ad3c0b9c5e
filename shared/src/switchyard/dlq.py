"""`switchyard-dlq`: inspect and act on dead-letter queues, for SREs.

    switchyard-dlq list                       every DLQ with its depth (needs rabbitmqctl
                                              or the management API to discover queues)
    switchyard-dlq list QUEUE                 the messages parked for one consumer queue
    switchyard-dlq show QUEUE [--id ID]       full headers and body
    switchyard-dlq replay QUEUE (--id ID | --all)
                                              send back to the consumer queue, attempts reset
    switchyard-dlq purge QUEUE (--id ID | --all) --yes

QUEUE is a consumer queue (``notification.send_email``) or its DLQ (``….dlq``).

Reading never counts as a failed delivery. A quorum queue counts every message handed
back to it (a requeue, a closed channel) towards its delivery limit — RabbitMQ 4.x
gives every quorum queue a limit of 20 and then drops the message — so the tool never
hands a message back: it takes the messages that were in the DLQ when it started, one
at a time, and settles each one at once — re-published behind the others (with a
confirm) and then acked when it stays, acked after its replay confirm when it leaves.
One pass keeps the order and holds one message in memory, however deep the queue.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import enum
import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from switchyard.bus.headers import (
    H_ATTEMPTS,
    H_EXC_MESSAGE,
    H_EXC_TYPE,
    H_FIRST_FAILURE,
    H_LAST_FAILURE,
    H_ORIGINAL_EXCHANGE,
    H_ORIGINAL_QUEUE,
    H_ORIGINAL_ROUTING_KEY,
    H_REASON,
)
from switchyard.bus.topology import BROKER_HEADERS, H_ATTEMPT, dlq_name

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
# Dropped from a replayed message: it starts over as a fresh delivery.
_RESET_HEADERS = BROKER_HEADERS | {
    H_ATTEMPT,
    H_REASON,
    H_EXC_TYPE,
    H_EXC_MESSAGE,
    H_ATTEMPTS,
    H_FIRST_FAILURE,
    H_LAST_FAILURE,
    H_ORIGINAL_QUEUE,
    H_ORIGINAL_EXCHANGE,
}


@dataclass(frozen=True)
class ParkedMessage:
    """A message in a DLQ, as an SRE needs to see it."""

    message_id: str | None
    event_type: str | None
    reason: str | None
    exception_type: str | None
    exception_message: str | None
    attempts: int | None
    first_failure: str | None
    last_failure: str | None
    original_routing_key: str | None
    original_queue: str | None
    headers: dict[str, Any]
    body: bytes

    @classmethod
    def from_message(cls, message: AbstractIncomingMessage) -> ParkedMessage:
        headers = parked_headers(message.headers or {})

        def text(name: str) -> str | None:
            value = headers.get(name)
            return None if value is None else _text(value)

        attempts = headers.get(H_ATTEMPTS)
        return cls(
            message_id=message.message_id,
            event_type=message.type or text("cloudEvents_type"),
            reason=text(H_REASON),
            exception_type=text(H_EXC_TYPE),
            exception_message=text(H_EXC_MESSAGE),
            attempts=attempts if type(attempts) is int else None,
            first_failure=text(H_FIRST_FAILURE),
            last_failure=text(H_LAST_FAILURE),
            original_routing_key=text(H_ORIGINAL_ROUTING_KEY),
            original_queue=text(H_ORIGINAL_QUEUE),
            headers=headers,
            body=message.body,
        )

    def as_dict(self, with_body: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "message_id": self.message_id,
            "type": self.event_type,
            "reason": self.reason,
            "exception": f"{self.exception_type}: {self.exception_message}",
            "attempts": self.attempts,
            "first_failure": self.first_failure,
            "last_failure": self.last_failure,
            "original_routing_key": self.original_routing_key,
            "original_queue": self.original_queue,
        }
        if with_body:
            out["headers"] = {k: _jsonable(v) for k, v in self.headers.items()}
            try:
                out["body"] = json.loads(self.body)
            except ValueError:
                out["body_base64"] = base64.b64encode(self.body).decode()
        return out


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def parked_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The headers of a parked message, with the broker's reason spelled in ours.

    A message the broker dead-lettered itself (past the consumer queue's delivery
    limit) carries only ``x-death``; a copy re-published by this tool would lose that on
    RabbitMQ 3.13.3+, so the reason, queue and routing key move into our headers.
    """
    out = dict(headers)
    first_reason = out.get("x-first-death-reason")
    if H_REASON not in out and first_reason is not None:
        out[H_REASON] = _text(first_reason).replace("_", "-")
        queue = out.get("x-first-death-queue")
        if queue is not None:
            out.setdefault(H_ORIGINAL_QUEUE, _text(queue))
        deaths = out.get("x-death")
        if isinstance(deaths, list) and deaths and isinstance(deaths[-1], Mapping):
            keys = deaths[-1].get("routing-keys")
            if isinstance(keys, list) and keys:
                out.setdefault(H_ORIGINAL_ROUTING_KEY, _text(keys[0]))
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def consumer_queue_of(queue: str) -> str:
    return queue[: -len(".dlq")] if queue.endswith(".dlq") else queue


class Verdict(enum.Enum):
    KEEP = "keep"  # stays in the DLQ (re-published behind the others)
    GONE = "gone"  # leaves the DLQ (replayed with a confirm, or purged)


Visit = Callable[[AbstractIncomingMessage], Awaitable[Verdict]]


class NotReplayed(Exception):
    """The replay target did not take the message (no queue bound, or no confirm)."""


class DeadLetters:
    """Operations on one consumer queue's DLQ."""

    def __init__(self, amqp_url: str, queue: str) -> None:
        self.amqp_url = amqp_url
        self.queue = consumer_queue_of(queue)
        self.dlq = dlq_name(self.queue)

    async def _with_channel(self, work: Callable[[AbstractChannel], Awaitable[Any]]) -> Any:
        connection = await aio_pika.connect(self.amqp_url)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            return await work(channel)
        finally:
            await connection.close()

    async def _pass(self, channel: AbstractChannel, visit: Visit) -> None:
        """Visit each message that is in the DLQ now, once, in order, one at a time."""
        queue = await channel.get_queue(self.dlq, ensure=True)  # passive: gives the depth now
        for _ in range(int(queue.declaration_result.message_count or 0)):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                return
            if await visit(message) is Verdict.KEEP:
                await self._put_back(channel, message)
            await message.ack()

    async def _put_back(self, channel: AbstractChannel, message: AbstractIncomingMessage) -> None:
        headers = {
            k: v
            for k, v in parked_headers(message.headers or {}).items()
            if k not in BROKER_HEADERS
        }
        await channel.default_exchange.publish(
            _copy(message, headers), routing_key=self.dlq, mandatory=True
        )

    async def peek(self, limit: int | None = 100) -> list[ParkedMessage]:
        """The first ``limit`` parked messages (all with None); nothing changes."""

        async def work(channel: AbstractChannel) -> list[ParkedMessage]:
            seen: list[ParkedMessage] = []

            async def visit(message: AbstractIncomingMessage) -> Verdict:
                if limit is None or len(seen) < limit:
                    seen.append(ParkedMessage.from_message(message))
                return Verdict.KEEP

            await self._pass(channel, visit)
            return seen

        result: list[ParkedMessage] = await self._with_channel(work)
        return result

    async def find(self, message_id: str) -> list[ParkedMessage]:
        """Every parked copy of ``message_id`` (bounded memory: only the matches are kept)."""

        async def work(channel: AbstractChannel) -> list[ParkedMessage]:
            found: list[ParkedMessage] = []

            async def visit(message: AbstractIncomingMessage) -> Verdict:
                if message.message_id == message_id:
                    found.append(ParkedMessage.from_message(message))
                return Verdict.KEEP

            await self._pass(channel, visit)
            return found

        result: list[ParkedMessage] = await self._with_channel(work)
        return result

    async def replay(self, message_id: str | None = None) -> int:
        """Send matching messages (all when ``message_id`` is None) back where they came
        from; a message whose target does not take it stays in the DLQ."""

        async def work(channel: AbstractChannel) -> int:
            replayed = 0

            async def visit(message: AbstractIncomingMessage) -> Verdict:
                nonlocal replayed
                if message_id is not None and message.message_id != message_id:
                    return Verdict.KEEP
                try:
                    await self._replay_one(channel, message)
                except NotReplayed as error:
                    print(f"kept {message.message_id}: {error}", file=sys.stderr)
                    return Verdict.KEEP
                replayed += 1
                return Verdict.GONE

            await self._pass(channel, visit)
            return replayed

        count: int = await self._with_channel(work)
        return count

    async def _replay_one(self, channel: AbstractChannel, message: AbstractIncomingMessage) -> None:
        headers = {k: v for k, v in (message.headers or {}).items() if k not in _RESET_HEADERS}
        parked = ParkedMessage.from_message(message)
        exchange_name = parked.headers.get(H_ORIGINAL_EXCHANGE)
        if exchange_name is not None:  # parked because no queue was bound: route it again
            exchange = await channel.get_exchange(_text(exchange_name), ensure=False)
            routing_key = parked.original_routing_key or message.type or ""
        else:
            exchange = channel.default_exchange
            routing_key = parked.original_queue or self.queue
        try:
            await exchange.publish(_copy(message, headers), routing_key=routing_key, mandatory=True)
        except aiormq.exceptions.DeliveryError as error:
            raise NotReplayed(f"nothing took it at {routing_key!r}") from error

    async def purge(self, message_id: str | None = None) -> int:
        async def work(channel: AbstractChannel) -> int:
            if message_id is None:
                queue = await channel.get_queue(self.dlq, ensure=True)
                result = await queue.purge()
                return int(result.message_count or 0)
            removed = 0

            async def visit(message: AbstractIncomingMessage) -> Verdict:
                nonlocal removed
                if message.message_id != message_id:
                    return Verdict.KEEP
                removed += 1
                return Verdict.GONE

            await self._pass(channel, visit)
            return removed

        count: int = await self._with_channel(work)
        return count


def _copy(message: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    return aio_pika.Message(
        body=message.body,
        headers=headers,
        content_type=message.content_type,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        app_id=message.app_id,
        timestamp=message.timestamp,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def discover_dlqs(amqp_url: str) -> list[tuple[str, int]]:
    """(dlq name, depth) for every DLQ, from the management API or a local rabbitmqctl."""
    management = os.environ.get("RABBITMQ_MANAGEMENT_URL")
    if management:
        parsed = urllib.parse.urlsplit(management)
        request = urllib.request.Request(
            f"{parsed.scheme}://{parsed.hostname}:{parsed.port or 15672}/api/queues"
        )
        if parsed.username:
            token = base64.b64encode(f"{parsed.username}:{parsed.password or ''}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (operator-given URL)
            queues = json.load(response)
        return sorted(
            (q["name"], int(q.get("messages", 0))) for q in queues if q["name"].endswith(".dlq")
        )
    if shutil.which("rabbitmqctl"):
        output = subprocess.run(
            ["rabbitmqctl", "list_queues", "name", "messages", "--quiet", "--no-table-headers"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        rows = []
        for line in output.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].endswith(".dlq"):
                rows.append((parts[0], int(parts[1])))
        return sorted(rows)
    raise RuntimeError(
        "cannot discover queues: set RABBITMQ_MANAGEMENT_URL (http://user:pass@host:15672) "
        "or name the queue: switchyard-dlq list QUEUE"
    )


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [list(map(str, headers))] + [
        [("" if c is None else str(c)) for c in row] for row in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


async def _run(args: argparse.Namespace) -> int:
    url = args.amqp_url
    if args.command == "list" and not args.queue:
        depths = discover_dlqs(url)
        print(_table(depths, ["dlq", "messages"]) if depths else "no dead-letter queues")
        return 0
    tool = DeadLetters(url, args.queue)
    if args.command == "list":
        parked = await tool.peek(args.limit)
        rows = [
            (
                m.message_id,
                m.event_type,
                m.reason,
                m.attempts,
                m.last_failure,
                f"{m.exception_type}: {m.exception_message}"[:80],
            )
            for m in parked
        ]
        print(
            _table(rows, ["message_id", "type", "reason", "attempts", "last_failure", "error"])
            if rows
            else f"{tool.dlq} is empty"
        )
        return 0
    if args.command == "show":
        parked = await tool.find(args.id) if args.id else await tool.peek(args.limit)
        print(json.dumps([m.as_dict(with_body=True) for m in parked], indent=2, default=str))
        return 0 if parked else 1
    if args.command == "replay":
        if not (args.id or args.all):
            print("replay needs --id ID or --all", file=sys.stderr)
            return 2
        count = await tool.replay(None if args.all else args.id)
        print(f"replayed {count} message(s) from {tool.dlq} to {tool.queue}")
        return 0 if count else 1
    if args.command == "purge":
        if not (args.id or args.all) or not args.yes:
            print("purge needs (--id ID or --all) and --yes", file=sys.stderr)
            return 2
        count = await tool.purge(None if args.all else args.id)
        print(f"purged {count} message(s) from {tool.dlq}")
        return 0
    return 2


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="switchyard-dlq", description="Inspect and replay dead-lettered events"
    )
    parser.add_argument("--amqp-url", default=os.environ.get("AMQP_URL", DEFAULT_AMQP_URL))
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="DLQs and their depth, or the messages of one")
    p_list.add_argument("queue", nargs="?")
    p_list.add_argument("--limit", type=int, default=100)
    p_show = sub.add_parser("show", help="headers and body of parked messages")
    p_show.add_argument("queue")
    p_show.add_argument("--id")
    p_show.add_argument("--limit", type=int, default=100)
    for name in ("replay", "purge"):
        p = sub.add_parser(name)
        p.add_argument("queue")
        p.add_argument("--id")
        p.add_argument("--all", action="store_true")
        if name == "purge":
            p.add_argument("--yes", action="store_true", help="confirm the deletion")
    args = parser.parse_args(argv)
    raise SystemExit(asyncio.run(_run(args)))


if __name__ == "__main__":
    main()
