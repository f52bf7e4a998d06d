"""CPU time per (point, region) pair of the compiled S = 3 kernel (``solid.batch_solid_moments``), one thread.

Process CPU time (not wall time), best and median of 5 passes over 60,000 pairs of ``random_network([3, 16, 16, 5],
rng=0, cov_x=0.1)`` and 20 sampled points: on a shared, loaded machine wall times mostly measure the wait for a
core, CPU time the kernel. Run it with ``DGNEXACT_THREADS=1``; to compare two trees alternate
``PYTHONPATH=<tree> .venv/bin/python benchmarks/bench_solid_kernel.py`` between them.
"""

from __future__ import annotations

import time

import numpy as np

import engine
from engine.distributions import posterior_region_params, region_gaussians
from engine.gaussian.solid import SolidGeometry, batch_solid_moments
from engine.partition import partition

PAIRS = 60_000


def main() -> None:
    net = engine.random_network([3, 16, 16, 5], rng=0, cov_x=0.1)
    part = partition(net)
    rg = region_gaussians(net, part)
    mu, _ = posterior_region_params(net, part, net.sample(20, rng=1), rg)
    geo = SolidGeometry([r.polytope for r in part], rg.cov)
    pn, pr = np.nonzero(np.broadcast_to(geo.ok[None], mu.shape[:2]))
    pn, pr = pn[:PAIRS], pr[:PAIRS]
    m = mu[pn, pr]
    batch_solid_moments(geo, pr[:100], m[:100], 2)  # load (or compile) the kernel
    times = []
    for _ in range(5):
        t = time.process_time()
        batch_solid_moments(geo, pr, m, 2)
        times.append(time.process_time() - t)
    print(f"S = 3 kernel: {1e6 * min(times) / pr.size:.2f} us/pair CPU (best of 5; median "
          f"{1e6 * float(np.median(times)) / pr.size:.2f}), {pr.size} pairs, {len(part)} regions")


if __name__ == "__main__":
    main()
