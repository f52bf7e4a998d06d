"""Run a foreign implementation as a subprocess: ``crosscheck --cmd 'CMD ... {model} {data} {out}'``.

The command line is a template: ``{model}`` becomes the path of the network as ``cpa-dgn`` JSON,
``{data}`` the path of the data points (``.npy``, or ``.csv`` with ``data_format="csv"``: comma
separated, no header, 17 significant digits, so every float64 round-trips) and ``{out}`` the path where
the command must write its claims JSON (any of ``log_marginal``, ``posterior_mean``, ``posterior_cov``,
``n_regions``). Paths are shell-quoted. The command runs through ``/bin/sh`` in its own process group
(killed whole on timeout), with its stdout and stderr captured apart from the verifier's and kept in
the report. Any language works; the verifier never imports the foreign code.

What can go wrong with the run itself is a FAIL of the implementation, not bad input: a non-zero exit
status, a timeout, no claims file, a claims file that is not JSON or not a well-formed claim.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from engine.errors import DGNInputError

PLACEHOLDERS = ("{model}", "{data}", "{out}")
TAIL_CHARS = 20_000  # of each stream, kept in the report


@dataclass
class ForeignRun:
    """What happened when the foreign command ran (stdout / stderr are its own, never printed inline)."""

    command: str
    returncode: int | None
    seconds: float
    stdout: str
    stderr: str
    problem: str = ""  # "" when the claims file was read and well formed

    @property
    def ok(self) -> bool:
        return not self.problem

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}

    def stderr_tail(self, n: int = 3) -> list[str]:
        return [ln for ln in self.stderr.strip().splitlines() if ln.strip()][-n:]


def check_template(template: str) -> str:
    """The command template must name ``{out}`` (else the claims could never be found)."""
    if not isinstance(template, str) or not template.strip():
        raise DGNInputError("cmd", "is empty", "give a command line such as 'python impl.py {model} {data} {out}'")
    if "{out}" not in template:
        raise DGNInputError("cmd", "does not contain {out}", "the command must write its claims JSON to {out}")
    return template


def write_inputs(net, X: np.ndarray, folder: Path, data_format: str = "npy") -> dict[str, Path]:
    """Model JSON and data file in ``folder``; returns the placeholder -> path map."""
    if data_format not in ("npy", "csv"):
        raise DGNInputError("data-format", f"is {data_format!r}", "use npy or csv")
    model = folder / "model.json"
    model.write_text(json.dumps(net.to_dict()))
    data = folder / f"data.{data_format}"
    if data_format == "npy":
        np.save(data, np.ascontiguousarray(X, dtype=np.float64))
    else:
        np.savetxt(data, X, delimiter=",", fmt="%.17g")
    return {"{model}": model, "{data}": data, "{out}": folder / "claims.json"}


def substitute(template: str, paths: dict[str, Path]) -> str:
    cmd = template
    for key, path in paths.items():
        cmd = cmd.replace(key, shlex.quote(str(path)))
    return cmd


def _tail(text: bytes | str | None) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return text if len(text) <= TAIL_CHARS else "[...]\n" + text[-TAIL_CHARS:]


def _execute(cmd: str, timeout: float | None, cwd: str | None) -> tuple[int | None, str, str, float, bool]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=cwd)
    try:
        out, err = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the command's own process group, started above
        out, err = proc.communicate()
        timed_out = True
    return proc.returncode, _tail(out), _tail(err), time.perf_counter() - t0, timed_out


def run_command(template: str, net, X: np.ndarray, *, timeout: float | None = None, data_format: str = "npy",
                cwd: str | None = None) -> tuple[dict | None, ForeignRun]:
    """Run the foreign command on (net, X); returns (claims dict or None, :class:`ForeignRun`)."""
    from .foreign import _json_constant, validate_claims

    check_template(template)
    if timeout is not None and not (np.isfinite(timeout) and timeout > 0):
        raise DGNInputError("timeout", f"must be a positive number of seconds, got {timeout!r}")
    with tempfile.TemporaryDirectory(prefix="dgnexact-crosscheck-") as tmp:
        paths = write_inputs(net, X, Path(tmp), data_format)
        cmd = substitute(template, paths)
        rc, out, err, secs, timed_out = _execute(cmd, timeout, cwd)
        run = ForeignRun(template, rc, round(secs, 3), out, err)
        if timed_out:
            run.problem = f"timed out after {timeout:g} s (killed)"
        elif rc != 0:
            run.problem = f"exited with status {rc}"
        elif not paths["{out}"].is_file():
            run.problem = "exited 0 but wrote no claims file to {out}"
        if run.problem:
            return None, run
        try:
            raw = json.loads(paths["{out}"].read_text(), parse_constant=_json_constant)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            run.problem = f"wrote a claims file that is not valid JSON ({exc})"
            return None, run
    try:
        claims = validate_claims(raw, net, len(X))
    except DGNInputError as exc:
        run.problem = f"wrote malformed claims: {exc}"
        return None, run
    return claims, run
