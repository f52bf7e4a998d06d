"""Reproducer (oracle bug, fixed): quad_s2 2.5e-6 low on one region of campaign case s4-cov1e-3 (block 1, point 1,
region 6) with an error estimate of 1e-18: its outer split points sat at z1 = 1.64 +- 0.001 for a peak at 3.86 +- 0.04.
Prints the region's log mass by polygon_moments_mp (30, 50 digits), the engine, a brute 2-D mpmath quadrature (closed
inner integral), and quad_s2's region integral minus the prefactor. Run from the worktree root with PYTHONPATH=.
"""
import numpy as np, mpmath as mp
from verify.highdim_campaign import CASES, build
from verify.oracles.quadrature import polygon_moments_mp
from engine.distributions import posterior_region_params, region_gaussians, region_truncated_moments
from engine.partition import partition
spec = [s for s in CASES if s.name == "s4-cov1e-3"][0]
b = build(spec)
x = b.X[1]
net, so = b.blocks[1], b.out_slices[1]
part = partition(net)
P = part[6].polytope
rg = region_gaussians(net, part)
mu, ln = posterior_region_params(net, part, x[None, so], rg)
m, C = mu[0, 6], rg.cov[6]
L = np.linalg.cholesky(C)
for dps in (30, 50):
    print("polygon_moments_mp", dps, polygon_moments_mp(P.H @ L, P.c - P.H @ m, dps=dps))
pm = region_truncated_moments(part, mu, rg.cov, accuracy="relative")
print("engine", pm.log_mass[0, 6], pm.log_mass_error[0, 6], pm.method)
# mpmath: 2-D quad of exact gaussian over the polygon (in z), a brute-force independent check
with mp.workdps(30):
    Cm = mp.matrix(C.tolist()); Ci = mp.inverse(Cm); det = mp.det(Cm)
    mm = [mp.mpf(float(v)) for v in m]
    H = [[mp.mpf(float(v)) for v in r] for r in P.H]; c = [mp.mpf(float(v)) for v in P.c]
    def seg(z1):
        lo, hi = -mp.inf, mp.inf
        for (h1, h2), ci in zip(H, c):
            if h2 > 0: hi = min(hi, (ci - h1*z1)/h2)
            elif h2 < 0: lo = max(lo, (ci - h1*z1)/h2)
        return lo, hi
    # inner closed form: conditional normal of z2 given z1
    s11, s12, s22 = Cm[0,0], Cm[0,1], Cm[1,1]
    def inner(z1):
        lo, hi = seg(z1)
        if not lo < hi: return mp.mpf(0)
        cm = mm[1] + s12/s11*(z1-mm[0]); cs = mp.sqrt(s22 - s12**2/s11)
        a, bb = (lo-cm)/cs, (hi-cm)/cs
        pr = (mp.ncdf(-a) - mp.ncdf(-bb)) if a > 0 else (mp.ncdf(bb) - mp.ncdf(a))
        return mp.npdf(z1, mm[0], mp.sqrt(s11)) * pr
    vx = sorted(float(v) for v in P.vertices[:, 0])
    sd = float(mp.sqrt(s11))
    pts = sorted(set([-mp.inf] + [mp.mpf(v) for v in vx] + [mm[0] + k*sd for k in (-40,-12,-6,-3,-1,0,1,3,6,12,40)] + [mp.inf]))
    v, e = mp.quad(inner, pts, error=True)
    print("brute 2-D (closed inner over z2 | z1)", mp.log(v), e)

from verify.oracles.quadrature import quad_s2
q = quad_s2(net, x[so], [part[6]], dps=20)
print("quad_s2 region integral - log prefactor", q.log_px - ln[0, 6], "claimed rel error", q.rel_error)
