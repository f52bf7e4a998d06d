"""``python -m verify demo``: a gallery of real bug classes, each caught by ``crosscheck --cmd``.

:mod:`verify.demo_impl` is a small independent S = 1 implementation (numpy/scipy only). Run correct,
it must agree with the exact engine on every field (no false alarm); run with each ``--bug``, the
crosscheck must FAIL and name the field and the points. The bug classes were met in real code:
tail cancellation ``sf(a) - sf(b)``, additive floors, a latent box clip, rays treated as vertices,
``pi`` for ``log pi``, a unit-variance convention, the standard deviation for the variance, a mixture
covariance without its between-region term.

The model is a [1, 6, 6, 3] ReLU network (diagonal Sigma_x); the data are three points drawn from it
and four far from its manifold (log p from -200 to -3300 nats, where relative accuracy of tiny region
masses decides the answer).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .demo_impl import BUGS

EXPECTED = {  # the fields each bug must be caught on (others may fail too)
    "tail_cancellation": "log_marginal",
    "additive_floor": "log_marginal",
    "box_clipping": "log_marginal",
    "rays_as_vertices": "log_marginal",
    "pi_for_log_pi": "log_marginal",
    "unit_variance": "log_marginal",
    "std_for_variance": "posterior_cov",
    "no_between_cov": "posterior_cov",
}
FAR = [(0.0, None), (2.885, 10.0, (-0.405, 0.195, -0.893)), (1.715, 20.0, (-0.219, -0.634, -0.742)),
       (-2.253, 20.0, (0.181, 0.407, -0.895))]


def demo_problem():
    """(network, X): the demo's model and its seven data points (three near, four far)."""
    from engine.network import random_network

    net = random_network([1, 6, 6, 3], "relu", cov_x=[0.2, 0.3, 0.25], rng=11)
    rows = [net.sample(3, rng=101)]
    rows.append(net.forward(np.zeros((1, 1))) + np.array([25.0, -25.0, 25.0]))
    for z0, length, d in FAR[1:]:
        d = np.asarray(d) / np.linalg.norm(d)
        rows.append(net.forward(np.array([[z0]])) + length * d)
    return net, np.vstack(rows)


def impl_command(bug: str = "") -> str:
    """The ``--cmd`` template that runs the demo implementation (with ``bug``) in a new interpreter."""
    script = Path(__file__).with_name("demo_impl.py")
    parts = [shlex.quote(sys.executable), shlex.quote(str(script))] + (["--bug", bug] if bug else [])
    return " ".join(parts + ["{model}", "{data}", "{out}"])


@dataclass
class Exhibit:
    bug: str
    result: object  # CrosscheckResult

    @property
    def caught(self) -> bool:
        if not self.bug:
            return self.result.ok
        return EXPECTED[self.bug] in self.result.failed_fields

    def lines(self) -> list[str]:
        res = self.result
        name = self.bug or "correct implementation"
        if not self.bug:
            verdict = "PASS (no false alarm)" if res.ok else "FALSE ALARM"
            return [f"{verdict:<9} {name}: " + ", ".join(
                f"{f.name} max err {f.max_abs_err:.1e}" for f in res.judged)]
        out = [f"{'CAUGHT' if self.caught else 'MISSED':<9} {name}: fails on {', '.join(res.failed_fields) or '-'}"]
        for fname in res.failed_fields:
            f = res.fields[fname]
            pts = f.nonfinite[:2] + [w for w in f.worst if np.isfinite(w["got"])][:2]
            out.append(f"          {fname}: {f.n_bad} of {f.n_values} bad; " + "; ".join(
                f"{w['at']}: {w['got']:.10g} vs exact {w['wanted']:.10g}" for w in pts[:3]))
        return out


def run_demo(bugs=BUGS, *, timeout: float = 120.0) -> list[Exhibit]:
    """Each implementation (the correct one first) through the ``--cmd`` crosscheck path."""
    from .command import run_command
    from .crosscheck import crosscheck, foreign_failure
    from .progress import exact_values

    net, X = demo_problem()
    exact = exact_values(net, X)
    out = []
    for bug in ("", *bugs):
        claims, run = run_command(impl_command(bug), net, X, timeout=timeout)
        res = foreign_failure(net, X, run) if claims is None else crosscheck(net, X, claims, evaluation=exact,
                                                                            foreign=run)
        out.append(Exhibit(bug, res))
    return out


def gallery(exhibits: list[Exhibit]) -> str:
    head = [
        "dgnexact verify demo: independently written buggy implementations, each cross-checked through",
        "  python -m verify crosscheck --model M.json --data X.npy --cmd "
        f"{shlex.quote(impl_command('BUG'))}",
        "model [1, 6, 6, 3] ReLU, 7 points (3 near the manifold, 4 far); tolerances 1e-8 nats, 1e-7 moments",
        "",
    ]
    body = [ln for e in exhibits for ln in e.lines()]
    n = sum(e.caught for e in exhibits if e.bug)
    tail = ["", f"{n} of {sum(1 for e in exhibits if e.bug)} bugs caught"]
    return "\n".join(head + body + tail)
