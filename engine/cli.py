"""``python -m engine <command>``: one module per command in ``engine/commands/``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``main(args) -> int``.
Modules are imported only when their command runs, so a light command never pays for torch.
Bad input (:class:`engine.errors.DGNInputError`) prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "evaluate": ("engine.commands.evaluate", "exact log p(x), posterior mean and covariance of data points"),
    "fit": ("engine.commands.fit", "exact EM: fit a network to data"),
    "experiment": ("engine.commands.experiment", "the paper's EM-vs-VAE experiments with figures"),
    "impute": ("engine.commands.impute", "exact imputation of missing (NaN) entries: E[x_miss | x_obs]"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import DGNInputError

    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in COMMANDS:
        if argv and argv[0] not in {"-h", "--help"}:
            top.print_usage(sys.stderr)
            print(f"python -m engine: error: unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}",
                  file=sys.stderr)
            return 2
        top.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"python -m engine {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.main(args) or 0)
    except DGNInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
