"""The ``dirtylog`` command: the engine from the shell.

Every subcommand refuses bad input with one sentence on stderr and exit status 2, as the
selftests' option parsing does, never with a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from engine.cli import bench, export, kvm, perftest, run, sweep, tables
from engine.util.errors import DirtylogError, clip

SUBCOMMANDS = (tables, run, export, perftest, bench, kvm, sweep)
"""Each module adds its subparser with ``add_parser``; none of them imports this one."""

EXIT_USAGE = 2
MAX_MESSAGE = 600  # characters of a refusal printed (values it echoes are cut with "…")


class _Parser(argparse.ArgumentParser):
    """argparse that prints one line (not the whole usage) and exits 2 on a bad option."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: {clip(message, MAX_MESSAGE)} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dirtylog",
        description="DirtyLog Inspector engine: KVM arm64 stage-2 dirty logging and pre-copy "
        "live migration, simulated.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DirtylogError as exc:
        print(f"dirtylog {args.command}: {clip(str(exc), MAX_MESSAGE)}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print(f"dirtylog {args.command}: not enough memory for this run", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"dirtylog {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: one line unless debugging
        if os.environ.get("DIRTYLOG_DEBUG"):
            raise
        print(
            f"dirtylog {args.command}: internal error "
            f"({type(exc).__name__}: {clip(str(exc), 200)}); "
            "set DIRTYLOG_DEBUG=1 for the traceback and please report it",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
