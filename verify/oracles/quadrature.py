"""mpmath quadrature of the raw model (oracle for Theorem 1 eq. 5 and the posterior eq. 6, Prop. 2).

The integrand is the model itself, evaluated at working precision ``dps`` (default 30 digits) with the
network's forward pass done in mpmath on the exact binary values of the float64 weights:

    f(z) = N(x; g(z), Sigma_x) N(z; 0, Sigma_z)          (eq. 4),   p(x) = int f,
    E[z | x] = int z f / p(x),   E[z z^T | x] = int z z^T f / p(x),   P(omega | x) = int_omega f / p(x).

Nothing of the engine's eq. 5-7 is used. The partition's geometry (S = 1 interval ends, S = 2
polygon vertices) only places the split points so that each piece is smooth; its correctness is checked
separately by sampling. Inside a piece a few extra split points are put around the peak of f, located
by fitting a parabola to three raw evaluations of ``log f`` (exact on a region, where f is Gaussian).
Each integral is done by ``mp.quad`` (tanh-sinh) with its own error estimate, which is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import mpmath as mp
import numpy as np

from engine.network import Linear, Network


class MPModel:
    """The raw model at mpmath precision: forward pass and log of the joint density f(z)."""

    def __init__(self, net: Network, x: np.ndarray):
        self.layers = []
        for layer in net.layers:
            if isinstance(layer, Linear):
                self.layers.append(("lin", mp.matrix(layer.weight.tolist()), mp.matrix(layer.bias.tolist())))
            else:
                self.layers.append(("act", mp.mpf(float(layer.negative_slope)), None))
        S, D = net.latent_dim, net.data_dim
        cx, cz = mp.matrix(net.cov_x.tolist()), mp.matrix(net.cov_z.tolist())
        self.prec_x, self.prec_z = mp.inverse(cx), mp.inverse(cz)
        log2pi = mp.log(2 * mp.pi)
        self.const_x = -(D * log2pi + mp.log(mp.det(cx))) / 2
        self.const_z = -(S * log2pi + mp.log(mp.det(cz))) / 2
        self.x = mp.matrix([float(v) for v in np.ravel(x)])
        self.S, self.D = S, D

    def forward(self, z) -> mp.matrix:
        h = mp.matrix(list(z))
        for kind, a, b in self.layers:
            if kind == "lin":
                h = a * h + b
            else:
                h = mp.matrix([v if v > 0 else a * v for v in h])
        return h

    @staticmethod
    def _quad(prec, v):
        return (v.T * prec * v)[0, 0]

    def log_prior(self, z) -> mp.mpf:
        return self.const_z - self._quad(self.prec_z, mp.matrix(list(z))) / 2

    def log_lik(self, z) -> mp.mpf:
        return self.const_x - self._quad(self.prec_x, self.x - self.forward(z)) / 2

    def log_f(self, z) -> mp.mpf:
        return self.log_lik(z) + self.log_prior(z)


@dataclass
class QuadResult:
    log_px: float
    mean: np.ndarray  # (S,)
    cov: np.ndarray  # (S, S)
    region_log_weights: np.ndarray  # (R,) log P(omega | x)
    log_px_mp: mp.mpf
    rel_error: float  # error estimate of p(x), relative
    moment_error: float  # error estimate of the moments, absolute, in units of the posterior sd
    dps: int


def _peak_points(logf, lo, hi):
    """Split points around the maximum of the Gaussian ``exp(logf)`` on [lo, hi] (fit from 3 raw values)."""
    if mp.isinf(lo) and mp.isinf(hi):
        a, b, c = mp.mpf(-1), mp.mpf(0), mp.mpf(1)
    elif mp.isinf(lo):
        a, b, c = hi - 2, hi - 1, hi
    elif mp.isinf(hi):
        a, b, c = lo, lo + 1, lo + 2
    else:
        a, b, c = lo, (lo + hi) / 2, hi
    fa, fb, fc = logf(a), logf(b), logf(c)
    # parabola through three points: curvature and vertex
    d1, d2 = (fb - fa) / (b - a), (fc - fb) / (c - b)
    curv = (d2 - d1) / (c - a)  # = q''/2
    pts = []
    if curv < 0:
        sd = 1 / mp.sqrt(-2 * curv)
        mode = (a + b) / 2 - d1 / (2 * curv)
        for k in (-40, -12, -5, -2, -1, 0, 1, 2, 5, 12, 40):
            pts.append(mode + k * sd)
        for end in (lo, hi):
            if not mp.isinf(end):
                pts += [end - sd, end + sd, end - 6 * sd, end + 6 * sd]
    return sorted(p for p in pts if lo < p < hi)


def _memo(fn):
    cache = {}

    def wrapped(z):
        key = z
        if key not in cache:
            cache[key] = fn(z)
        return cache[key]

    return wrapped


def quad_s1(net: Network, x, part, dps: int = 30) -> QuadResult:
    """S = 1: ``p(x)``, posterior mean/variance and region weights by tanh-sinh split at the kinks."""
    if net.latent_dim != 1:
        raise ValueError("quad_s1 needs S = 1")
    with mp.workdps(dps):
        model = MPModel(net, x)
        logf = _memo(lambda z: model.log_f([z]))
        z0s, z1s, z2s, errs = [], [], [], []
        for region in part:
            lo, hi = (
                mp.mpf(float(v)) if np.isfinite(v) else (mp.inf if v > 0 else -mp.inf)
                for v in region.polytope.interval()
            )
            pts = [lo] + _peak_points(logf, lo, hi) + [hi]
            # mp.quad's convergence test is absolute (eps = 10^-dps): scale the integrand to O(1)
            ref = (
                max(logf(p) for p in pts if not mp.isinf(p)) if any(not mp.isinf(p) for p in pts) else logf(0)
            )
            scale = mp.exp(ref)
            vals = []
            for k in range(3):
                v, e = mp.quad(lambda z, k=k: mp.exp(logf(z) - ref) * z**k, pts, error=True)  # noqa: B023
                vals.append(v * scale)
                errs.append((k, e * scale))
            z0s.append(vals[0])
            z1s.append(vals[1])
            z2s.append(vals[2])
        Z0, Z1, Z2 = mp.fsum(z0s), mp.fsum(z1s), mp.fsum(z2s)
        mean = Z1 / Z0
        var = Z2 / Z0 - mean**2
        sd = mp.sqrt(var)
        e0 = mp.fsum(e for k, e in errs if k == 0)
        e1 = mp.fsum(e for k, e in errs if k == 1)
        e2 = mp.fsum(e for k, e in errs if k == 2)
        rel = e0 / Z0
        mom = (e1 / Z0 + abs(mean) * rel) / sd + (e2 / Z0 + Z2 / Z0 * rel) / var
        weights = [mp.log(v) - mp.log(Z0) if v > 0 else -mp.inf for v in z0s]
        return QuadResult(
            float(mp.log(Z0)),
            np.array([float(mean)]),
            np.array([[float(var)]]),
            np.array([float(w) for w in weights]),
            mp.log(Z0),
            float(rel),
            float(mom),
            dps,
        )


def quad_prior_masses_s1(net: Network, part, dps: int = 30) -> tuple[np.ndarray, float]:
    """Prop. 1 weights ``Phi_omega(0, Sigma_z)`` by quadrature of the prior density over each interval.

    Returns the masses (R,) and the largest error estimate relative to each mass.
    """
    with mp.workdps(dps):
        s2 = mp.mpf(float(net.cov_z[0, 0]))
        out, rel = [], mp.mpf(0)
        for region in part:
            lo, hi = (
                mp.mpf(float(v)) if np.isfinite(v) else (mp.inf if v > 0 else -mp.inf)
                for v in region.polytope.interval()
            )
            # the log density is maximal at the point of [lo, hi] nearest 0; scale to O(1) there
            near = min(max(mp.mpf(0), lo), hi)
            ref = -near * near / (2 * s2)
            logd = lambda z, ref=ref: -z * z / (2 * s2) - ref
            pts = [lo] + _peak_points(logd, lo, hi) + [hi]
            v, e = mp.quad(lambda z, logd=logd: mp.exp(logd(z)), pts, error=True)
            scale = mp.exp(ref) / mp.sqrt(2 * mp.pi * s2)
            v, e = v * scale, e * scale
            out.append(v)
            rel = max(rel, e / v if v > 0 else mp.mpf(0))
        return np.array([float(v) for v in out]), float(rel)


def _polygon_z1_range(poly):
    V, R, L = poly.vertices, poly.rays, poly.lineality
    lo, hi = (float(V[:, 0].min()), float(V[:, 0].max())) if V.size else (0.0, 0.0)
    dirs = np.vstack([R, L, -L]) if (R.size or L.size) else np.zeros((0, 2))
    if np.any(dirs[:, 0] < -1e-14) if dirs.size else False:
        lo = -np.inf
    if np.any(dirs[:, 0] > 1e-14) if dirs.size else False:
        hi = np.inf
    return lo, hi


def quad_s2(net: Network, x, part, dps: int = 30) -> QuadResult:
    """S = 2: nested tanh-sinh quadrature over each region polygon of the raw integrand.

    The outer integral runs over z1, split at the polygon's vertices and around the peak; for each z1
    the inner integral runs over the segment ``{z2 : H (z1, z2) <= c}``, split around its peak. The
    inner error estimates are accumulated into the outer ones. Slow (minutes per point at 30 digits):
    used by the ``full`` profile only.
    """
    if net.latent_dim != 2:
        raise ValueError("quad_s2 needs S = 2")
    with mp.workdps(dps):
        model = MPModel(net, x)
        logf = _memo(lambda z1, z2: model.log_f([z1, z2]))
        tot = [[], [], [], [], [], []]  # 1, z1, z2, z1^2, z1 z2, z2^2
        err_tot = [mp.mpf(0)] * 6
        region_mass = []
        for region in part:
            poly = region.polytope
            H = [[mp.mpf(float(h)) for h in row] for row in poly.H]
            c = [mp.mpf(float(v)) for v in poly.c]
            lo1, hi1 = _polygon_z1_range(poly)
            lo1 = -mp.inf if not np.isfinite(lo1) else mp.mpf(lo1)
            hi1 = mp.inf if not np.isfinite(hi1) else mp.mpf(hi1)
            if not lo1 < hi1:
                region_mass.append(mp.mpf(0))
                continue

            def segment(z1):
                lo, hi = -mp.inf, mp.inf
                for (h1, h2), ci in zip(H, c):  # noqa: B023
                    if h2 > 0:
                        hi = min(hi, (ci - h1 * z1) / h2)
                    elif h2 < 0:
                        lo = max(lo, (ci - h1 * z1) / h2)
                return lo, hi

            inner_cache: dict = {}
            cand = (
                [poly.interior_point()]
                + list(poly.vertices)
                + [v + r for v in poly.vertices for r in poly.rays]
            )
            cand = [p for p in cand if poly.contains(np.asarray(p)[None], tol=1e-9)[0]] or [
                poly.interior_point()
            ]
            # mp.quad's convergence test is absolute (eps = 10^-dps): scale the integrand to O(1)
            ref = max(logf(mp.mpf(float(p[0])), mp.mpf(float(p[1]))) for p in cand)

            def inner(z1):
                if z1 in inner_cache:  # noqa: B023
                    return inner_cache[z1]  # noqa: B023
                lo, hi = segment(z1)
                if not lo < hi:
                    res = ([mp.mpf(0)] * 3, [mp.mpf(0)] * 3)
                else:
                    g = lambda z2: logf(z1, z2)
                    pts = [lo] + _peak_points(g, lo, hi) + [hi]
                    vals, errs = [], []
                    for k in range(3):
                        v, e = mp.quad(lambda z2, k=k: mp.exp(g(z2) - ref) * z2**k, pts, error=True)  # noqa: B023
                        vals.append(v)
                        errs.append(e)
                    res = (vals, errs)
                inner_cache[z1] = res  # noqa: B023
                return res

            def outer_log(z1):
                v = inner(z1)[0][0]
                return mp.log(v) + ref if v > 0 else mp.mpf(-(10**6))  # noqa: B023

            vx = sorted({mp.mpf(float(v)) for v in poly.vertices[:, 0]} if poly.vertices.size else set())
            pts = sorted(set([p for p in vx if lo1 < p < hi1] + _peak_points(outer_log, lo1, hi1)))
            pts = [lo1] + pts + [hi1]
            funcs = [
                lambda z1: inner(z1)[0][0],
                lambda z1: z1 * inner(z1)[0][0],
                lambda z1: inner(z1)[0][1],
                lambda z1: z1 * z1 * inner(z1)[0][0],
                lambda z1: z1 * inner(z1)[0][1],
                lambda z1: inner(z1)[0][2],
            ]
            inner_err = [
                lambda z1: inner(z1)[1][0],
                None,
                lambda z1: inner(z1)[1][1],
                None,
                None,
                lambda z1: inner(z1)[1][2],
            ]
            for j, fn in enumerate(funcs):
                v, e = mp.quad(fn, pts, error=True)
                tot[j].append(v * mp.exp(ref))
                ie = mp.quad(inner_err[j], pts) if inner_err[j] is not None else mp.mpf(0)
                err_tot[j] += (e + abs(ie)) * mp.exp(ref)
            region_mass.append(tot[0][-1])
        Z = [mp.fsum(t) for t in tot]
        Z0 = Z[0]
        m = [Z[1] / Z0, Z[2] / Z0]
        C = [
            [Z[3] / Z0 - m[0] ** 2, Z[4] / Z0 - m[0] * m[1]],
            [Z[4] / Z0 - m[0] * m[1], Z[5] / Z0 - m[1] ** 2],
        ]
        rel = err_tot[0] / Z0
        sd = mp.sqrt(min(C[0][0], C[1][1]))
        mom = max(err_tot[j] / Z0 for j in range(1, 6)) / min(sd, sd**2) + rel * 10
        weights = [mp.log(v) - mp.log(Z0) if v > 0 else -mp.inf for v in region_mass]
        return QuadResult(
            float(mp.log(Z0)),
            np.array([float(v) for v in m]),
            np.array([[float(v) for v in row] for row in C]),
            np.array([float(w) for w in weights]),
            mp.log(Z0),
            float(rel),
            float(mom),
            dps,
        )
