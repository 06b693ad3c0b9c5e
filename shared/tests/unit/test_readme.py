"""shared/README.md stays true: every ``switchyard.…`` name it mentions exists, and the
new-service skeleton it shows builds an app that starts and is ready."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
_NAME = re.compile(r"\bswitchyard(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def _resolve(dotted: str) -> Any:
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            found = getattr(found, attribute)
        return found
    raise ModuleNotFoundError(dotted)


def test_every_name_the_map_mentions_exists() -> None:
    names = sorted(set(_NAME.findall(README.read_text())))
    assert len(names) > 40
    missing = []
    for name in names:
        try:
            _resolve(name)
        except (ModuleNotFoundError, AttributeError):
            missing.append(name)
    assert missing == [], f"shared/README.md names what does not exist: {missing}"


def _skeleton() -> str:
    text = README.read_text()
    block = text.split("## A new service, minimal", 1)[1].split("```python", 1)[1]
    return block.split("```", 1)[0]


@pytest.mark.integration
async def test_the_new_service_skeleton_starts_and_is_ready(
    settings_overrides: dict[str, Any], start_app: Any, broker_cleanup: None, jwks_server: Any
) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(_skeleton(), "shared/README.md", "exec"), namespace)  # noqa: S102
    settings = namespace["ChatSettings"](
        **settings_overrides,
        jwks_url=jwks_server.jwks_url,
        auth_issuer=jwks_server.issuer,
        jwt_audience=jwks_server.audience,
    )
    assert settings.port == 8082
    server = await start_app(namespace["create_app"](settings))

    async with aiohttp.ClientSession() as client, client.get(server.url + "/readyz") as response:
        assert response.status == 200, await response.text()
