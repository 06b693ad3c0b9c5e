"""``python -m auth_svc.strength_worker``: the password-strength check in its own process.

One JSON object per line on stdin (``{"password", "context", "min_score"}``), one answer per
line on stdout (``{"problem": [code, message] | null}``); ``ready`` first, once zxcvbn's
dictionaries are loaded. It exits when stdin closes — also when the service that started it
is killed, so no orphan outlives a SIGKILL. Nothing it reads is ever logged.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from auth_svc.domain.passwords import strength_problem


def main() -> None:
    strength_problem("warm-up-only", (), 0)  # load the dictionaries before saying ready
    out = sys.stdout
    out.write('"ready"\n')
    out.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            problem = strength_problem(
                str(request["password"]),
                tuple(str(item) for item in request["context"]),
                int(request["min_score"]),
            )
            answer: dict[str, Any] = {"problem": list(problem) if problem else None}
        except (ValueError, KeyError, TypeError):
            answer = {"error": "malformed request"}
        out.write(json.dumps(answer) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
