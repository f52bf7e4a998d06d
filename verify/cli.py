"""``python -m verify [command]``: one module per command in ``verify/commands/``.

With no command (or only options) the default verification suite runs (``run``). Each command module
defines ``add_arguments(parser)`` and ``main(args) -> int``; it is imported only when its command runs.
Exit codes: 0 every check passed, 1 a check failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "run": ("verify.commands.run", "run the verification suite (default command)"),
    "crosscheck": ("verify.commands.crosscheck", "check another implementation's claimed numbers"),
    "fuzz": ("verify.commands.fuzz", "property-based fuzzing campaign with hypothesis"),
    "replay": ("verify.commands.replay", "re-run the properties on one saved case"),
    "grade": ("verify.commands.grade", "grade a foreign decoder's log-likelihood estimates exactly"),
    "demo": ("verify.commands.demo", "buggy implementations of real bug classes, each shown caught"),
}


def _parser(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m verify {name}".replace(" run", " [run]"),
                                     description=COMMANDS[name][1])
    importlib.import_module(COMMANDS[name][0]).add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    from engine.errors import DGNInputError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in {"-h", "--help"}:
        print("usage: python -m verify [" + "|".join(COMMANDS) + "] [options]\n")
        print(__doc__)
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:<11} {text}")
        print("\n" + _parser("run").format_help())
        print("python -m verify COMMAND --help shows each command's options.")
        return 0
    if argv and not argv[0].startswith("-"):
        name, rest = argv[0], argv[1:]
        if name not in COMMANDS:
            print(f"python -m verify: error: unknown command {name!r}; choose from {', '.join(COMMANDS)}",
                  file=sys.stderr)
            return 2
    else:
        name, rest = "run", argv
    module, parser = importlib.import_module(COMMANDS[name][0]), _parser(name)
    try:
        args = parser.parse_args(rest)
    except SystemExit as exc:  # argparse exits 2 on bad options, 0 on --help
        return int(exc.code or 0)
    try:
        return int(module.main(args) or 0)
    except DGNInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
