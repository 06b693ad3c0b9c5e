"""Signing-key administration: ``python -m auth_svc.keys_cli rotate|list|remove KID``.

Reads AUTH_KEYS_DIR (and AUTH_KEY_ENCRYPTION_KEY) like the service, or ``--dir``.

- ``rotate [--activate-in SECONDS]``: add a key; it is published at once and
  signs after SECONDS (default 0). Older keys stay published, so tokens they
  signed keep working until they are removed.
- ``list``: every key with its state (signing, published, pending).
- ``remove KID``: stop publishing a key; tokens it signed are refused once
  verifiers refresh. The signing key cannot be removed (rotate first).

Running services pick up changes within AUTH_KEY_RELOAD_INTERVAL seconds.
Private keys are never printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from auth_svc.adapters.signing_keys import KeyRing, KeyStoreError
from auth_svc.settings import AuthSettings
from switchyard.settings import load_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m auth_svc.keys_cli", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dir", type=Path, help="the key directory (default: AUTH_KEYS_DIR)")
    commands = parser.add_subparsers(dest="command", required=True)
    rotate = commands.add_parser("rotate", help="add a new signing key")
    rotate.add_argument(
        "--activate-in",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="publish now, sign only after this many seconds (default 0)",
    )
    commands.add_parser("list", help="list the keys")
    remove = commands.add_parser("remove", help="remove a key that no longer signs")
    # A kid is base64url and may begin with "-": write `remove -- KID` then.
    remove.add_argument("kid", help="the key to remove (`remove -- KID` when it begins with -)")
    return parser


def ring_for(directory: Path | None) -> KeyRing:
    overrides = {"keys_dir": directory} if directory else {}
    settings = load_settings(AuthSettings, **overrides)
    passphrase = settings.key_encryption_key
    return KeyRing(
        settings.keys_dir, passphrase=passphrase.get_secret_value() if passphrase else None
    )


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ring = ring_for(args.dir)
    try:
        ring.reload()
        if args.command == "rotate":
            key = ring.create(activate_in=args.activate_in)
            print(f"created {key.kid} (signs from {key.activate_at.isoformat()})")
        elif args.command == "remove":
            ring.remove(args.kid)
            print(f"removed {args.kid}")
        else:
            try:
                signing = ring.active().kid
            except KeyStoreError:
                signing = None
            now = ring.clock.now()
            for key in ring.keys:
                state = (
                    "signing"
                    if key.kid == signing
                    else ("pending" if key.activate_at > now else "published")
                )
                print(
                    f"{key.kid}  {state:9}  created {key.created_at.isoformat()}  "
                    f"activates {key.activate_at.isoformat()}"
                )
            if not ring.keys:
                print(f"no keys in {ring.directory}")
    except KeyStoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    raise SystemExit(run())


if __name__ == "__main__":
    main()
