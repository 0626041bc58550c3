"""``python -m pytest_wsgi502.report COMMAND``: report commands that work on saved manifests, outside pytest.

    python -m pytest_wsgi502.report merge RUN.json... --json OUT [--html OUT]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

COMMANDS = ("merge",)


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        given = f"unknown command {argv[0]!r}; " if argv and argv[0] not in ("-h", "--help") else ""
        print(f"usage: python -m pytest_wsgi502.report {{{','.join(COMMANDS)}}} ... ({given}merge: combine the "
              "--wsgi-json manifests of sharded runs into one report)")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    from pytest_wsgi502.report.merge import main as merge

    return merge(list(argv[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
