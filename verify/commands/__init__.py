"""Verifier commands: one module per ``python -m verify`` subcommand (see verify/cli.py)."""
