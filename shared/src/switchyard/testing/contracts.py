"""Contract fuzzing: schemathesis against a service's OpenAPI (``contracts/http/<service>.yaml``),
through the real app on loopback.

    result = await fuzz_contract(
        "auth",
        server.url,
        headers={"Authorization": f"Bearer {token}"},
        operation_headers={"^/internal/": {"Authorization": f"Bearer {internal}"}},
    )
    assert result.passed, result.report

Every check schemathesis has (``--checks all``: no server error, statuses, content types,
headers and bodies as documented, invalid input refused, valid input accepted, …) except
``ignored_auth`` (whether an operation still answers with its security removed: the tests pass
one token for the whole run, so a public operation that reads it would look "ignored"). The
run is bounded (``max_examples`` per operation, a fixed seed: the same cases every run) and
goes through the CLI in a subprocess, so the app keeps serving on the test's event loop.
``contracts/http/<service>.fuzz.toml``, when present, is its configuration: the refusals of
schema-valid input that come from rules JSON Schema cannot state, each with its reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CONTRACTS = Path(__file__).resolve().parents[4] / "contracts" / "http"
DEFAULT_MAX_EXAMPLES = 8
SEED = 12


@dataclass(frozen=True)
class FuzzResult:
    returncode: int
    report: str

    @property
    def passed(self) -> bool:
        return self.returncode == 0


def contract_path(service: str) -> Path:
    return CONTRACTS / f"{service}.yaml"


async def fuzz_contract(
    service: str,
    base_url: str,
    *,
    headers: Mapping[str, str] | None = None,
    operation_headers: Mapping[str, Mapping[str, str]] | None = None,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    exclude_checks: Sequence[str] = (),
    exclude_paths: Sequence[str] = (),
    phases: str = "examples,coverage,fuzzing",
    timeout: float = 600.0,
) -> FuzzResult:
    """Run schemathesis against ``service``'s contract at ``base_url``; the exit status and
    the whole report."""
    arguments = [
        "run",
        str(contract_path(service)),
        "--url",
        base_url,
        "--checks",
        "all",
        "--exclude-checks",
        ",".join(["ignored_auth", *exclude_checks]),
        "--max-examples",
        str(max_examples),
        "--seed",
        str(SEED),
        "--phases",
        phases,
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--no-shrink",
        "--continue-on-failure",
    ]
    for name, value in (headers or {}).items():
        arguments += ["--header", f"{name}: {value}"]
    for path in exclude_paths:
        arguments += ["--exclude-path", path]
    config = CONTRACTS / f"{service}.fuzz.toml"
    text = config.read_text() if config.is_file() else ""
    for pattern, extra in (operation_headers or {}).items():
        # Headers for some operations only (a token for them), as TOML (JSON strings are
        # TOML basic strings).
        pairs = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in extra.items())
        text += f"\n[[operations]]\ninclude-path-regex = {json.dumps(pattern)}\n"
        text += f"headers = {{ {pairs} }}\n"
    # Its own working directory: schemathesis keeps a cache (.schemathesis/) where it runs.
    workdir = tempfile.mkdtemp(prefix="schemathesis-")
    config_file = os.path.join(workdir, "schemathesis.toml")
    with open(config_file, "w") as written:  # noqa: ASYNC230 - a small file, before the run
        written.write(text)
    prefix = ["--config-file", config_file]
    command = Path(sys.executable).with_name("schemathesis")
    process = await asyncio.create_subprocess_exec(
        str(command),
        *prefix,
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=workdir,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return FuzzResult(process.returncode or 0, output.decode(errors="replace"))


__all__ = ["FuzzResult", "contract_path", "fuzz_contract"]
