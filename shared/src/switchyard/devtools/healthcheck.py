"""The container health check: ``python -m switchyard.devtools.healthcheck [SERVICE]``.

GET ``/healthz`` of the service in this container (``SERVICE``, set by the image) on its
port (``<SERVICE>_PORT``, else its default in ``switchyard.ports``); exit status 0 on a
200, 1 otherwise. Standard library only: it runs every few seconds.
"""

from __future__ import annotations

import os
import sys
import urllib.request

from switchyard.ports import service_port


def healthy(service: str, *, host: str = "127.0.0.1", timeout: float = 2.0) -> bool:
    url = f"http://{host}:{service_port(service)}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:  # refused, timed out, or an error status (HTTPError)
        return False


def main() -> None:
    service = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SERVICE", "")
    if not service:
        raise SystemExit("usage: python -m switchyard.devtools.healthcheck SERVICE")
    raise SystemExit(0 if healthy(service) else 1)


if __name__ == "__main__":
    main()
