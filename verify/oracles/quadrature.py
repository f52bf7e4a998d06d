"""mpmath quadrature of the raw model (oracle for Theorem 1 eq. 5 and the posterior eq. 6, Prop. 2).

The integrand is the model itself, evaluated at working precision ``dps`` (default 30 digits) with the
network's forward pass done in mpmath on the exact binary values of the float64 weights:

    f(z) = N(x; g(z), Sigma_x) N(z; 0, Sigma_z)          (eq. 4),   p(x) = int f,
    E[z | x] = int z f / p(x),   E[z z^T | x] = int z z^T f / p(x),   P(omega | x) = int_omega f / p(x).

Nothing of the engine's eq. 5-7 is used. The partition's geometry (S = 1 interval ends, S = 2
polygon vertices) only places the split points so that each piece is smooth; its correctness is checked
separately by sampling. Inside a piece a few extra split points are put around the peak of f, located
by fitting a parabola to three raw evaluations of ``log f`` (exact on a region, where f is Gaussian).
Each integral is done by ``mp.quad`` (tanh-sinh) with its own error estimate, which is reported; for
S = 2 the inner integral over each slice of a region is by default the exact normal integral of the
slice's Gaussian, read off raw forward passes (see :func:`quad_s2`).
"""

from __future__ import annotations

from dataclasses import dataclass

import mpmath as mp
import numpy as np

from engine.network import Linear, Network


class MPModel:
    """The raw model at mpmath precision: forward pass and log of the joint density f(z).

    Plain lists of ``mpf`` and ``mp.fdot`` (about 2x faster than ``mp.matrix`` products, same
    arithmetic at the working precision); the weights are the exact binary values of the float64 ones.
    """

    def __init__(self, net: Network, x: np.ndarray):
        self.layers = []
        for layer in net.layers:
            if isinstance(layer, Linear):
                W = [[mp.mpf(float(w)) for w in row] for row in np.asarray(layer.weight)]
                b = [mp.mpf(float(v)) for v in np.ravel(layer.bias)]
                self.layers.append(("lin", W, b))
            else:
                self.layers.append(("act", mp.mpf(float(layer.negative_slope)), None))
        S, D = net.latent_dim, net.data_dim
        cx, cz = mp.matrix(net.cov_x.tolist()), mp.matrix(net.cov_z.tolist())
        px, pz = mp.inverse(cx), mp.inverse(cz)
        self.prec_x = [[px[i, j] for j in range(D)] for i in range(D)]
        self.prec_z = [[pz[i, j] for j in range(S)] for i in range(S)]
        log2pi = mp.log(2 * mp.pi)
        self.const_x = -(D * log2pi + mp.log(mp.det(cx))) / 2
        self.const_z = -(S * log2pi + mp.log(mp.det(cz))) / 2
        self.x = [mp.mpf(float(v)) for v in np.ravel(x)]
        self.S, self.D = S, D

    def forward(self, z) -> list:
        h = list(z)
        for kind, a, b in self.layers:
            if kind == "lin":
                h = [mp.fdot(row, h) + bi for row, bi in zip(a, b)]
            else:
                h = [v if v > 0 else a * v for v in h]
        return h

    @staticmethod
    def _quad(prec, v) -> mp.mpf:
        return mp.fdot(v, [mp.fdot(row, v) for row in prec])

    def log_prior(self, z) -> mp.mpf:
        return self.const_z - self._quad(self.prec_z, list(z)) / 2

    def log_lik(self, z) -> mp.mpf:
        return self.log_lik_of_output(self.forward(z))

    def log_lik_of_output(self, g) -> mp.mpf:
        return self.const_x - self._quad(self.prec_x, [xi - gi for xi, gi in zip(self.x, g)]) / 2

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
    n_slice_fallbacks: int = 0  # S = 2 closed-form inner integrals replaced by tanh-sinh (not affine)


def _parabola(logf, a, b, c):
    """(mode, sd) of the Gaussian ``exp(q)`` with q the parabola through ``logf`` at a < b < c; None if not concave."""
    fa, fb, fc = logf(a), logf(b), logf(c)
    d1, d2 = (fb - fa) / (b - a), (fc - fb) / (c - b)
    curv = (d2 - d1) / (c - a)  # = q''/2
    if not curv < 0:
        return None
    return (a + b) / 2 - d1 / (2 * curv), 1 / mp.sqrt(-2 * curv)


_PEAK_STEPS = 40


def _peak_points(logf, lo, hi):
    """Split points around the maximum of the Gaussian ``exp(logf)`` on [lo, hi].

    A parabola through three raw values, then Newton steps: refit through the clipped mode +- the fitted sd until
    the mode moves by under 0.1 sd. The first three points (lo, lo + 1, lo + 2 on a half-line) can lie far from a
    narrow peak, whose fit is then wrong by many widths: one such outer integral of ``quad_s2`` put its split points
    at z1 = 1.64 +- 0.001 for a peak at 3.86 +- 0.04 and came out 2.5e-6 low with an error estimate of 1e-18
    (the campaign case ``s4-cov1e-3``; ``tests/test_highdim_known_answers.py``).
    """
    if not lo < hi:
        return []  # an empty or single-point piece has nothing to split
    if mp.isinf(lo) and mp.isinf(hi):
        a, b, c = mp.mpf(-1), mp.mpf(0), mp.mpf(1)
    elif mp.isinf(lo):
        a, b, c = hi - 2, hi - 1, hi
    elif mp.isinf(hi):
        a, b, c = lo, lo + 1, lo + 2
    else:
        a, b, c = lo, (lo + hi) / 2, hi
    fit = _parabola(logf, a, b, c)
    if fit is None:
        return []
    mode, sd = fit
    for _ in range(_PEAK_STEPS):
        m = min(max(mode, lo), hi)
        a, c = max(m - sd, lo), min(m + sd, hi)
        b = (a + c) / 2
        if not a < b < c:
            break
        new = _parabola(logf, a, b, c)
        if new is None:
            break
        done = abs(new[0] - mode) < sd / 10 and abs(new[1] / sd - 1) < mp.mpf(0.1)
        mode, sd = new
        if done:
            break
    pts = [mode + k * sd for k in (-40, -12, -5, -2, -1, 0, 1, 2, 5, 12, 40)]
    for end in (lo, hi):
        if not mp.isinf(end):
            pts += [end - sd, end + sd, end - 6 * sd, end + 6 * sd]
    return sorted(p for p in pts if lo < p < hi)


def _memo(fn):
    cache = {}

    def wrapped(*z):
        if z not in cache:
            cache[z] = fn(*z)
        return cache[z]

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


_SLICE_GUARD_DPS = 20  # extra digits for the closed-form slice integrals (short slices near vertices)


def _slice_gaussian(model: MPModel, z1, lo, hi, dps: int):
    """``log f(z1, t) = K0 - (t - m)^2 / (2 s^2)`` on the slice ``lo <= t <= hi`` of one region.

    g is affine on a region, so along the slice ``g(z1, t) = g(t_a) + (t - t_a) d`` with ``d`` read off
    two raw forward passes at ``t_a, t_b`` inside the slice; ``K0, m, s`` follow from the raw value
    ``log f(z1, t_a)``, its derivative and its curvature (Sigma_x^-1 and Sigma_z^-1 only, none of the
    engine's region quantities). Raw forward passes at up to six more points (near both ends of the
    slice's window, its middle, the peak and the peak +- 3 s, where inside) must agree with the affine map to
    the working precision; otherwise (a kink inside the slice) the result is None. Runs at the working
    precision that the caller set (``dps`` digits).
    """
    if mp.isinf(lo) and mp.isinf(hi):
        a, b = mp.mpf(-1), mp.mpf(1)
    elif mp.isinf(lo):
        a, b = hi - 2, hi
    elif mp.isinf(hi):
        a, b = lo, lo + 2
    else:
        a, b = lo, hi
    L = b - a
    ta, tb = a + L / 4, a + 3 * L / 4
    ga, gb = model.forward([z1, ta]), model.forward([z1, tb])
    d = [(u - v) / (tb - ta) for u, v in zip(gb, ga)]
    ra = [xi - gi for xi, gi in zip(model.x, ga)]
    Pd = [mp.fdot(row, d) for row in model.prec_x]
    pz = model.prec_z
    gamma = mp.fdot(d, Pd) + pz[1][1]
    beta = mp.fdot(Pd, ra) - (pz[1][0] * z1 + pz[1][1] * ta)  # d/dt log f at t_a
    alpha = model.log_lik_of_output(ga) + model.log_prior([z1, ta])
    m = ta + beta / gamma
    K0 = alpha + beta * beta / (2 * gamma)
    s = 1 / mp.sqrt(gamma)
    # the affine map must hold at raw points across the slice (a kink would show here)
    scale = 1 + max(abs(v) for v in ga) + max(abs(u - v) for u, v in zip(gb, ga))
    tol = mp.mpf(10) ** (-(dps - 10))
    checks = [a + L / 1000, a + L / 2, b - L / 1000] + [m + k * s for k in (-3, 0, 3)]
    for t in checks:
        if not lo < t < hi:
            continue
        g = model.forward([z1, t])
        lim = tol * scale * (1 + abs(t - ta) / (tb - ta))
        if any(abs(gi - (u + (t - ta) * di)) > lim for gi, u, di in zip(g, ga, d)):
            return None
    return K0, m, s


def _gaussian_slice_moments(lo, hi, m, s):
    """(int_lo^hi t^k phi_{m,s}(t) dt for k = 0, 1, 2) with P taken on the far side of the mean."""
    ua = (lo - m) / s if not mp.isinf(lo) else -mp.inf
    ub = (hi - m) / s if not mp.isinf(hi) else mp.inf
    if ua >= 0:
        P = mp.ncdf(-ua) - (mp.ncdf(-ub) if not mp.isinf(ub) else 0)
    elif ub <= 0:
        P = mp.ncdf(ub) - (mp.ncdf(ua) if not mp.isinf(ua) else 0)
    else:
        P = 1 - (mp.ncdf(-ub) if not mp.isinf(ub) else 0) - (mp.ncdf(ua) if not mp.isinf(ua) else 0)
    pa = mp.npdf(ua) if not mp.isinf(ua) else mp.mpf(0)
    pb = mp.npdf(ub) if not mp.isinf(ub) else mp.mpf(0)
    upa = ua * pa if not mp.isinf(ua) else mp.mpf(0)
    upb = ub * pb if not mp.isinf(ub) else mp.mpf(0)
    D1 = pa - pb  # int u phi(u) du over [ua, ub]
    D2 = P + upa - upb  # int u^2 phi(u) du
    M = [P, m * P + s * D1, m * m * P + 2 * m * s * D1 + s * s * D2]
    A = [P, abs(m) * P + s * abs(D1), m * m * P + 2 * abs(m) * s * abs(D1) + s * s * abs(D2)]
    return M, A


def quad_s2(net: Network, x, part, dps: int = 30, inner: str = "closed") -> QuadResult:
    """S = 2: nested quadrature over each region polygon of the raw integrand.

    The outer integral runs over z1 by tanh-sinh ``mp.quad``, split at the polygon's vertices and
    around the peak; for each z1 the inner integral runs over the segment ``{z2 : H (z1, z2) <= c}``.

    ``inner="closed"`` (default): on a region g is affine, so along the segment the raw integrand is
    exactly ``exp`` of a quadratic in z2; :func:`_slice_gaussian` reads it off raw forward passes
    (checked at up to six more raw points) and the three moments are closed-form normal integrals at
    ``dps + 20`` digits (``ncdf`` on the far side of the mean: no cancellation in the tails). Their
    error is rounding (10^(2-dps) of the absolute terms). A slice whose raw forward passes are not
    affine falls back to the tanh-sinh inner integral (counted in ``n_slice_fallbacks``), and its whole value
    enters the error estimate (tanh-sinh's own estimate is not trusted on a slice with a kink or a spike).

    ``inner="tanh-sinh"``: the inner integral by tanh-sinh of the raw integrand split around its peak,
    with ``mp.quad``'s error estimates; about 100x slower (minutes per region at 30 digits).

    The inner error estimates are integrated into the outer ones.

    Known failure (undiagnosed): on the pinned fuzz net rescaling-0 (gain ~1e9 over the noise, a posterior
    ~1e-10 wide lying along facet lines that meet at angles ~1e-9) the value is 4.9e-4 nats (dps 20, 233
    fallbacks) and 5.3e-4 nats (dps 40, 442 fallbacks) off the exact-rational oracle ``verify.oracles.exact``
    while the estimate claims 1e-18 / 1e-38. Not precision (dps 40 is no better), not the fallen-back slices'
    values (counted whole as error they add < 1e-18), and not only the outer range: the partition's float64
    corners there are up to 8e-5 off the exact ones, but ranges from corners recomputed in mpmath from the
    facets gave 5.5e-4 too. Fallbacks also occur on ordinary nets (3-4 in one region of a [2,2,2] net at dps
    20-30, 909 on the verify suite's relu-S2 at dps 30) where the value is right, so their count alone does
    not flag it. Per region (quad_s2 on one region at a time, dps 20) the four weighted regions' terms are off
    the exact cells' by -1.6e-4, -9e-7, +2.6e-3 and -0.07 nats (the last with no fallback at all), while the
    engine's per-region terms agree with the exact ones to 4e-12: the suspect is the outer integral over z1,
    whose integrand can switch on over ~1e-4 in z1 where a facet nearly parallel to the thin posterior crosses
    its ridge (outer split points there made one region take > 5 min; not finished). Use
    ``verify.oracles.exact`` for such nets.
    """
    if net.latent_dim != 2:
        raise ValueError("quad_s2 needs S = 2")
    if inner not in ("closed", "tanh-sinh"):
        raise ValueError(f"inner must be 'closed' or 'tanh-sinh', got {inner!r}")
    closed = inner == "closed"
    n_fallback = 0
    with mp.workdps(dps):
        model = MPModel(net, x)
        logf = _memo(lambda z1, z2: model.log_f([z1, z2]))
        rnd = mp.mpf(10) ** (2 - dps)
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

            def inner_tanh_sinh(z1, lo, hi):
                g = lambda z2: logf(z1, z2)
                pts = [lo] + _peak_points(g, lo, hi) + [hi]
                vals, errs = [], []
                for k in range(3):
                    v, e = mp.quad(lambda z2, k=k: mp.exp(g(z2) - ref) * z2**k, pts, error=True)  # noqa: B023
                    vals.append(v)
                    errs.append(e)
                return vals, errs

            def inner_closed(z1, lo, hi):
                nonlocal n_fallback
                with mp.workdps(dps + _SLICE_GUARD_DPS):
                    sg = _slice_gaussian(model, z1, lo, hi, dps + _SLICE_GUARD_DPS)
                    if sg is not None:
                        K0, m, s = sg
                        M, A = _gaussian_slice_moments(lo, hi, m, s)
                        w = mp.exp(K0 - ref) * s * mp.sqrt(2 * mp.pi)  # noqa: B023
                        vals = [+(w * v) for v in M]
                        errs = [+(rnd * w * v) for v in A]
                if sg is None:
                    # not affine at the working precision: the tanh-sinh value is kept but not trusted (its
                    # estimate misses a spike narrower than its nodes), so the whole slice counts as error
                    n_fallback += 1
                    vals, errs = inner_tanh_sinh(z1, lo, hi)
                    return vals, [abs(v) + e for v, e in zip(vals, errs)]
                return [+v for v in vals], [+e for e in errs]

            def inner(z1):
                if z1 in inner_cache:  # noqa: B023
                    return inner_cache[z1]  # noqa: B023
                lo, hi = segment(z1)
                if not lo < hi:
                    res = ([mp.mpf(0)] * 3, [mp.mpf(0)] * 3)
                elif closed:
                    res = inner_closed(z1, lo, hi)
                else:
                    res = inner_tanh_sinh(z1, lo, hi)
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
            n_fallback,
        )


def polygon_moments_mp(Nrm, D, dps: int = 40):
    """Mass, mean and covariance of ``y ~ N(0, I_2)`` on the polygon ``{y : Nrm y <= D}`` by mpmath.

    Independent of the engine's planar code (no Owen T, no divergence theorem): coordinates
    ``y = t u + v w`` with ``u`` the direction of the polygon point closest to the origin (found by
    brute-force over edges and vertices in mpmath), the outer integral over ``t`` by tanh-sinh split at
    every vertex height and at ``t0 + k / max(1, t0)`` around the near end, the inner one over ``v`` in
    closed form (``ncdf`` differences taken on the far side of 0, so no cancellation in any tail). The
    covariance is integrated about the mean (two passes), so no large terms cancel. Returns
    ``(log_mass, mean (2,), cov (2, 2), rel_err)`` as floats; rel_err is mp.quad's estimate for the mass.
    """
    Nrm = np.asarray(Nrm, dtype=np.float64)
    D = np.asarray(D, dtype=np.float64)
    with mp.workdps(dps):
        rows = [(mp.mpf(float(a)), mp.mpf(float(b)), mp.mpf(float(d))) for (a, b), d in zip(Nrm, D)]
        # vertices and the closest point (brute force)
        cands = []
        for i, (a, b, d) in enumerate(rows):
            nn = a * a + b * b
            cands.append((a * d / nn, b * d / nn))  # foot of the perpendicular
            for a2, b2, d2 in rows[i + 1:]:
                det = a * b2 - b * a2
                if abs(det) > mp.mpf(10) ** (-12):
                    cands.append(((d * b2 - b * d2) / det, (a * d2 - d * a2) / det))
        tol = mp.mpf(10) ** (-20)

        def feasible(p):
            return all(a * p[0] + b * p[1] <= d + tol * (1 + abs(d)) for a, b, d in rows)

        if all(d > 0 for _, _, d in rows):
            closest = (mp.mpf(0), mp.mpf(0))
        else:
            pts = [p for p in cands if feasible(p)]
            closest = min(pts, key=lambda p: p[0] ** 2 + p[1] ** 2)
        r0 = mp.sqrt(closest[0] ** 2 + closest[1] ** 2)
        if r0 > mp.mpf(10) ** (-8):
            u = (closest[0] / r0, closest[1] / r0)
        else:
            u = (mp.mpf(0.6), mp.mpf(0.8))  # generic direction (not parallel to a network edge)
        w = (-u[1], u[0])
        # rows in (t, v) coordinates: at t + bt v <= d
        tv = [(a * u[0] + b * u[1], a * w[0] + b * w[1], d) for a, b, d in rows]
        verts = []
        for i, (a, b, d) in enumerate(tv):
            for a2, b2, d2 in tv[i + 1:]:
                det = a * b2 - b * a2
                if abs(det) > mp.mpf(10) ** (-12):
                    p = ((d * b2 - b * d2) / det, (a * d2 - d * a2) / det)
                    if all(aa * p[0] + bb * p[1] <= dd + tol * (1 + abs(dd)) for aa, bb, dd in tv):
                        verts.append(p[0])

        def seg(t):
            lo, hi = -mp.inf, mp.inf
            for a, b, d in tv:
                if abs(b) < mp.mpf(10) ** (-30):
                    if a * t > d:
                        return None
                    continue
                q = (d - a * t) / b
                if b > 0:
                    hi = min(hi, q)
                else:
                    lo = max(lo, q)
            return (lo, hi) if lo < hi else None

        def tail(x):  # P(N > x) without cancellation
            return mp.ncdf(-x)

        def inner(t, cv=None):
            """(Z, int v phi, int (v - cv)^2 phi) over the slice at t."""
            s = seg(t)
            if s is None:
                return mp.mpf(0), mp.mpf(0), mp.mpf(0)
            lo, hi = s
            if lo >= 0:
                Z = tail(lo) - tail(hi) if hi != mp.inf else tail(lo)
            elif hi <= 0:
                Z = tail(-hi) - tail(-lo) if lo != -mp.inf else tail(-hi)
            else:
                Z = 1 - tail(hi) - tail(-lo)
            plo = mp.npdf(lo) if lo != -mp.inf else mp.mpf(0)
            phi = mp.npdf(hi) if hi != mp.inf else mp.mpf(0)
            S1 = plo - phi
            if cv is None:
                return Z, S1, mp.mpf(0)
            # int (v - cv)^2 phi = int v^2 phi - 2 cv S1 + cv^2 Z, int v^2 phi = Z + lo plo - hi phi
            lp = lo * plo if lo != -mp.inf else mp.mpf(0)
            hp = hi * phi if hi != mp.inf else mp.mpf(0)
            S2 = Z + lp - hp
            return Z, S1, S2 - 2 * cv * S1 + cv * cv * Z

        t_lo = min(verts) if verts else -mp.inf
        t_hi = max(verts) if verts else mp.inf
        # unbounded directions: test far points
        big = mp.mpf(10) ** 6
        if seg(t_lo - 1 if t_lo != -mp.inf else -big) is not None:
            t_lo = -mp.inf
        if seg(t_hi + 1 if t_hi != mp.inf else big) is not None:
            t_hi = mp.inf
        t0 = max(r0, mp.mpf(0)) if r0 > 0 else mp.mpf(0)
        sc = 1 / max(mp.mpf(1), t0)
        split = {t_lo, t_hi} | {v for v in verts if t_lo < v < t_hi}
        for k in (0, 0.25, 0.5, 1, 2, 4, 8, 16, 32, -0.5, -1, -2, -4, -8):
            p = t0 + k * sc
            if t_lo < p < t_hi:
                split.add(p)
        pts = sorted(split)
        ref = t0 * t0 / 2  # scale the integrand to O(1) near the mode

        def out_w(t):
            return mp.exp(-t * t / 2 + ref) / mp.sqrt(2 * mp.pi)

        cache = {}

        def inner_at(t):
            if t not in cache:
                cache[t] = inner(t)
            return cache[t]

        M0, e0 = mp.quad(lambda t: out_w(t) * inner_at(t)[0], pts, error=True)
        Mt = mp.quad(lambda t: out_w(t) * t * inner_at(t)[0], pts)
        Mv = mp.quad(lambda t: out_w(t) * inner_at(t)[1], pts)
        mt, mv = Mt / M0, Mv / M0
        Ctt = mp.quad(lambda t: out_w(t) * (t - mt) ** 2 * inner_at(t)[0], pts) / M0
        Ctv = mp.quad(lambda t: out_w(t) * (t - mt) * (inner_at(t)[1] - mv * inner_at(t)[0]), pts) / M0
        Cvv = mp.quad(lambda t: out_w(t) * inner(t, mv)[2], pts) / M0
        log_mass = mp.log(M0) - ref
        U = mp.matrix([[u[0], w[0]], [u[1], w[1]]])
        m = U * mp.matrix([mt, mv])
        C = U * mp.matrix([[Ctt, Ctv], [Ctv, Cvv]]) * U.T
        return (float(log_mass), np.array([float(m[0]), float(m[1])]),
                np.array([[float(C[i, j]) for j in range(2)] for i in range(2)]), float(e0 / M0))
