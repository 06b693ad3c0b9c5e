"""The local mail sink of `make run`: an SMTP server that prints each message and keeps it.

Messages are stored as ``.eml`` files under the given directory (git-ignored ``.var/mail``),
so a newcomer can read the sign-up code without any mail account.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from switchyard.testing.smtp import ReceivedMail, SmtpSink


def _printer(directory: Path) -> Callable[[ReceivedMail], None]:
    directory.mkdir(parents=True, exist_ok=True)

    def on_message(mail: ReceivedMail) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = directory / f"{stamp}-{len(list(directory.glob('*.eml'))) + 1:04d}.eml"
        path.write_bytes(mail.message.as_bytes())
        try:
            body = mail.text
        except LookupError:
            body = "(no text part)"
        print(
            f"\n──── mail to {', '.join(mail.recipients)} ────\n"
            f"Subject: {mail.subject}\n\n{body.strip()}\n"
            f"──── saved as {path} ────",
            flush=True,
        )

    return on_message


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local SMTP sink for development")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", type=Path, default=Path(".var/mail"))
    args = parser.parse_args(argv)
    sink = SmtpSink(port=args.port)
    sink.handler.on_message = _printer(args.dir)
    sink.start()
    print(
        f"mail sink listening on 127.0.0.1:{args.port}; messages are kept in {args.dir}/",
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    sink.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
