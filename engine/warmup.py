"""Compile the numba kernels once, into their on-disk cache: ``python -m engine.warmup``.

``make setup`` runs this after installing, so the first ``evaluate`` of a user's process loads the compiled
S = 2 and S = 3 kernels (``cache=True``) instead of compiling them (about 20 s on 2 cores). First the compiled
double description (``engine.dd_kernel``, the partition for S >= 3 and the S = 2 fallback; ~47 s CPU to compile,
loaded from its cache in ~0.35 s CPU) compiles in one process, then the two dimensions in two processes at once.
The S = 2 evaluate partitions with the planar arrangement (the S = 2 default, ``engine.arrangement``), so its
kernels are compiled and cached too, and so are the S = 4 slice construction (``highdim.slice_kernel.warm``), the
S = 5 cones (``highdim.cones5.warm``), the S = 6 cones (``highdim.cone6_kernel.warm``) and the S = 1 quadrature
sums.
"""

from __future__ import annotations

import subprocess
import sys

_SNIPPET = ("import numpy as np, engine; "
            "engine.evaluate(engine.random_network({widths}, rng=0), np.zeros((3, {D})))")
CASES = ([2, 4, 4, 3], [3, 4, 4, 3])
_S1 = ("import numpy as np, engine; from engine.gaussian.interval import standard_interval_moments as f; "
       "f(np.array([0.0, 10.0, -1.0]), np.array([1e-9, 10.5, 1.0])); "  # a narrow interval: the quadrature sums
       "engine.evaluate(engine.random_network([1, 4, 4, 3], rng=0), np.zeros((3, 3)))")
_S4_SLICES = "from engine.gaussian.highdim.slice_kernel import warm; warm()"
_S5_CONES = "from engine.gaussian.highdim.cones5 import warm; warm()"
_S4_CONES = "from engine.gaussian.highdim.cone_kernel import warm; warm()"  # the S = 4 cones' region call
_S6_CONES = "from engine.gaussian.highdim.cone6_kernel import warm; warm()"
_PARTITION = "import engine; engine.partition(engine.random_network([3, 3, 3, 1], rng=0))"


def main() -> int:
    first = subprocess.run([sys.executable, "-c", _PARTITION]).returncode
    if first:
        return first
    procs = [subprocess.Popen([sys.executable, "-c", _SNIPPET.format(widths=w, D=w[-1])]) for w in CASES]
    procs.append(subprocess.Popen([sys.executable, "-c", "from engine.gaussian.planar.kernel import warm; warm()"]))
    procs.append(subprocess.Popen([sys.executable, "-c", _S4_SLICES]))
    procs.append(subprocess.Popen([sys.executable, "-c", _S5_CONES]))
    procs.append(subprocess.Popen([sys.executable, "-c", _S4_CONES]))
    procs.append(subprocess.Popen([sys.executable, "-c", _S6_CONES]))
    procs.append(subprocess.Popen([sys.executable, "-c", _S1]))
    return max(p.wait() for p in procs)


if __name__ == "__main__":
    raise SystemExit(main())
