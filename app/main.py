"""Entry point of the ``dirtylog-inspector`` GUI script."""

from __future__ import annotations

import sys


def main() -> int:
    from app.launch import main as launch

    return launch(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
