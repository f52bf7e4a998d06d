"""S' = 4: Gaussian mass and moments of a polyhedron by one level of outer quadrature over exact S = 3 slices.

Theorem 1 (eq. 5) needs ``Phi_omega(mu, Sigma_omega)`` and, for the posterior (eq. 6), the truncated moments. In
whitened, pointed coordinates (``y ~ N(0, I_4)`` on ``P = {Nrm y <= D}``) pick a unit direction ``e`` and an
orthonormal basis ``V`` of its complement: ``y = t e + V x`` and

    P(P) = int phi(t) P_3(slice(t)) dt,   slice(t) = {x : (Nrm V) x <= D - t Nrm e},

with ``P_3`` the standard-normal mass of the 3-D slice, computed by the compiled S = 3 cone decomposition
(``solid``, through the public :func:`engine.gaussian.polytopes.integrate_pairs`: one call for all the slices of
all the points of a region in each round). The moments follow from the same nodes by total expectation and
covariance: ``E[y] = E[t e + V E[x | t]]``, ``Cov[y] = E[V Cov[x | t] V^T] + Cov[t e + V E[x | t]]``.

The integrand ``f(t) = phi(t) P_3(t)`` is log-concave (the marginal of a log-concave density on a convex set) and
analytic between the heights ``e . v`` of the vertices ``v`` of P, where the slice's combinatorial type changes.
So the window is split at those heights (and into panels short enough that the Gaussian factor changes by at most
a few nats across one), and each panel gets the 15-point Gauss-Kronrod rule; ``|K15 - G7|`` (the difference to
the embedded 7-point Gauss rule, which is the error of the LOWER order rule, not of the K15 value reported) is
the panel's error bar, and panels whose bar is too large are bisected (at most ``MAX_ROUNDS`` rounds). The
direction is a fixed generic one and the window ``|t| <= sqrt(|y*|^2 + WINDOW^2)`` (``y*``: P's point closest to
the mean). Slicing along ``y*`` instead (``TOWARD_CLOSEST``, the earlier rule) puts the heaviest slices, just
above ``t = |y*|``, as thin sheets or slivers around y* with the mean on their boundary, where the S = 3 cone
decomposition cancels and the nested S = 3 fallback costs ~1 s a slice. The first round integrates only the inner
window ``|t| <= sqrt(|y*|^2 + 2 (log(1 / tol) + INNER_MARGIN))`` (8.1 at tol 1e-10, 6.2 at 1e-4, instead of 10): P's
mass beyond it is at most the Gaussian's, ``Q(.)`` on each side, and a pair whose Gaussian tail second moment
there (which bounds the tails' pull on the mass, mean and covariance) exceeds ``TAIL_SHARE tol`` of its estimated
mass gets the rest of the full window in the next round. Beyond the window the
log-concavity bounds the tails: ``g = log f`` lies below its secant through the two outermost nodes, so the
tail is at most ``e^{g(t_1)} / |slope|``; the smaller of that and the Gaussian bound is added to the bar.

Each round's slices are built in one compiled pass (:mod:`.slice_kernel`: their S = 3 facets and edges straight
into the arrays of the S = 3 kernel); ``USE_COMPILED_SLICES = False`` builds them as polytopes in numpy, the
reference the tests compare with. The slices the S = 3 kernel does not resolve at its strict thresholds (its signed
sums cancel: tiny slices near a vertex height, slivers, needles) are resolved on the same arrays (:func:`_resolve`):
the kernel again with thresholds loosened by the slice's share of its pair, then what it still flags by the
compiled adaptive cubature (``solid.cubature.adaptive_cubature``: tetrahedra, degree 19 / 15, the worst bisected
along their longest edge; the slice's vertices taken from the 4-D polytope's edges, :func:`.slice_kernel.slice_ends`),
and only what that leaves (degenerate or unbounded slices) is built as a polytope for ``polytopes.integrate_pairs``
and its nested S = 3 quadrature (``COMPILED_RESOLVE = False``: every such slice, the route before).

Before the S = 3 kernel, each slice's point closest to the mean (compiled, ~2 µs) bounds its integrand by
``phi(t) Q(d)``; nodes whose bounds total at most ``SKIP_SHARE tol`` of the pair's mass in a round are skipped
(integrand 0) and their bounds, times the rule's weights and its ``|K - G|`` weights, enter the bar
(:func:`_screened_kernel`; 15-40 % of a round's slices on the ``[4, 8, 8, 5]`` pairs).

The relative error bar of a pair is ``(sum_panels |K15 - G7| + sum_nodes w f rel_3 + tails) / P``, with
``rel_3`` the S = 3 solver's own bound for each slice (an estimate the kernel flags is never kept on its own bound:
that bound leaves out the unresolved edge terms, :func:`_triage`), plus the skipped nodes' bounds, plus for bounded
P the input's conditioning (:func:`input_conditioning`: the planes ``D`` and the corners ``Yv`` agree only to the
whitening's rounding, which moves the mass of a region 1e-4 wide by ~1e-10). It is a validated bar,
not a proof (the K - G difference bounds the Gauss rule's error when the integrand is resolved, which the tests
check against exact rotated boxes, block-factorised decoders and mpmath).

The batch driver (:func:`sliced_batch`) sends every pair to the cones first (``cones.cones_first``, with the
region's flags kept on :class:`SlicedGeometry` across the row blocks of an evaluate). Under a weight scale
(``engine.evaluate``) a pair's tolerance follows the bound on its weight, from ``budget.log_mass_bounds`` (the
certified distance and the region's volume: thin slivers get bounds ~20 nats below ``Q(|y*|)``), and the pairs the
cones leave are skipped, lightest bound first, while their bounds sum below ``FLAGGED_BUDGET`` of p(x)
(:func:`_settle_deferred`); the others come here. On ``[4, 16, 16, 5]`` this left 31 of 2,028 such pairs of
points 2-3 to the slices.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import log_ndtr

from ...polytope import Polytope
from ..constants import LOOSEN_WEIGHT, NEGLIGIBLE_NATS
from . import factors_and_ok, map_regions, whitened
from .cones import cone_shape as _cone_shape
from .cones import cones_first
from .qmc import closest_points, rqmc_moments
from .shape_kernel import cone_shape_checked

# Gauss-Kronrod 15 / Gauss 7 on [-1, 1] (QUADPACK qk15): nodes x, Kronrod weights wk, Gauss weights wg (0 on the
# Kronrod-only nodes); exact for polynomials of degree 22 / 13 (tests/test_highdim_sliced.py checks both)
_XK = np.array([0.991455371120812639206854697526329, 0.949107912342758524526189684047851,
                0.864864423359769072789712788640926, 0.741531185599394439863864773280788,
                0.586087235467691130294144845693013, 0.405845151377397166906606412076961,
                0.207784955007898467600689403773245, 0.0])
_WK = np.array([0.022935322010529224963732008058970, 0.063092092629978553290700663189204,
                0.104790010322250183839876322541518, 0.140653259715525918745189590510238,
                0.169004726639267902826583426598550, 0.190350578064785409913256402421014,
                0.204432940075298892414161999234649, 0.209482141084727828012999174891714])
_WG7 = np.array([0.129484966168869693270611432679082, 0.279705391489276667901467771423780,
                 0.381830050505118944950369775488975, 0.417959183673469387755102040816327])
GK_NODES = np.concatenate([-_XK[:-1], _XK[::-1]])
GK_WEIGHTS = np.concatenate([_WK[:-1], _WK[::-1]])
G7_WEIGHTS = np.zeros(15)
G7_WEIGHTS[1::2] = np.concatenate([_WG7[:-1], _WG7[::-1]])
# Gauss-Kronrod 7 / Gauss 3 (degree 10 / 5) for light pairs, padded to 15 columns (NaN nodes, zero weights)
_X7 = np.array([-0.960491268708020283423507092629080, -0.774596669241483377035853079956480,
                -0.434243749346802558002071502844628, 0.0, 0.434243749346802558002071502844628,
                0.774596669241483377035853079956480, 0.960491268708020283423507092629080])
_W7 = np.array([0.104656226026467265193823857192073, 0.268488089868333440728569280666710,
                0.401397414775962222905051818618432, 0.450916538658474142345110087045571,
                0.401397414775962222905051818618432, 0.268488089868333440728569280666710,
                0.104656226026467265193823857192073])
_G3 = np.array([0.0, 5.0 / 9.0, 0.0, 8.0 / 9.0, 0.0, 5.0 / 9.0, 0.0])
RULE_NODES = np.vstack([GK_NODES, np.concatenate([_X7, np.full(8, np.nan)])])
RULE_WEIGHTS = np.vstack([GK_WEIGHTS, np.concatenate([_W7, np.zeros(8)])])
RULE_DIFF = np.vstack([GK_WEIGHTS - G7_WEIGHTS, np.concatenate([_W7 - _G3, np.zeros(8)])])
COARSE_TOL = 1e-5  # pairs allowed this relative error or more take the 7-point rule

_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)
_ZERO = 1e-10  # |Nrm_i V| below this: facet i is perpendicular to the slices (a bound on t only)
_INC = 1e-9  # vertex-facet incidence tolerance (relative to 1 + |D|)
WINDOW = 10.0  # the integrand's envelope falls by WINDOW^2 / 2 = 50 nats at the window's ends (_window)
MAX_EXPONENT_STEP = 3.0  # panels at most this long in units of 1 / |t| (the Gaussian factor changes <= 3 nats)
MAX_PANEL = 1.0  # and at most this long
MERGE = 1e-9  # vertex heights closer than this (relative) are one breakpoint
INNER_MARGIN = 10.0  # the first round's window: |t| <= sqrt(|y*|^2 + 2 (log(1 / tol) + INNER_MARGIN)) (_inner_width);
# a pair whose Gaussian tail moment beyond it exceeds TAIL_SHARE tol of its mass gets the rest of the full window
TAIL_SHARE = 0.1
MAX_ROUNDS = 6  # bisection rounds for panels whose bar is too large
DEFAULT_TOL = 1e-10  # relative mass error aimed at
SKIP_SHARE = 1e-3  # a round skips nodes whose bounds total <= SKIP_SHARE tol of the mass (_screened_kernel)
SLICE_SHARE = 0.01  # a slice of share s of its pair's mass may have a relative error SLICE_SHARE tol / s
LIGHT_SHARE_MOMENTS = 1e-8  # slices below this share times tol / DEFAULT_TOL of a pair of tolerance tol > DEFAULT_TOL
HEAVY_SHARE_MOMENTS = 1e-10  # (below this share at DEFAULT_TOL) may keep the kernel's first estimate when moments
# are asked for (see _light)
_KERNEL_ALLOWANCE = 1e-13  # the S = 2, 3 kernels accept rel <= SOLID_FALLBACK_REL LOOSEN_WEIGHT / w = 1e-13 / w
_GENERIC = np.array([0.5377, 1.8339, -2.2588, 0.8622])


def _frame(e: np.ndarray) -> np.ndarray:
    """(M, 4, 3): orthonormal bases of the complements of the unit rows of ``e`` (M, 4)."""
    M, k = e.shape
    out = np.empty((M, k, k - 1))
    for m in range(M):
        Q, _ = np.linalg.qr(np.column_stack([e[m], np.eye(k)]))
        out[m] = Q[:, 1:k]
    return out


TOWARD_CLOSEST = False  # True: far means slice along the direction to P's closest point (the rule before issue 14's
# compiled pass; its first slices are thin sheets around y* with the mean on their boundary, which the S = 3 cone
# decomposition cannot resolve, and each took the S = 3 nested quadrature, ~1 s a slice)


def _directions(y):
    """Per point: a fixed generic unit direction, or with ``TOWARD_CLOSEST`` the unit direction to the closest
    point ``y`` (M, 4) of P where the mean is outside (distance > 1/2)."""
    r = np.linalg.norm(y, axis=1)
    g = _GENERIC + 1e-3 * np.arange(1, y.shape[1] + 1)
    g = g / np.linalg.norm(g)
    far = (r > 0.5) & TOWARD_CLOSEST
    e = np.where(far[:, None], y / np.where(far, r, 1.0)[:, None], g[None])
    return e / np.linalg.norm(e, axis=1)[:, None]


def closest_distance(Nrm, D):
    """(M, 4) closest points of P to the origin (``qmc.closest_points``) and (M,) the log of the rigorous upper
    bound ``Q(|y*|)`` on the mass (P lies beyond the supporting hyperplane at y*)."""
    y = closest_points(Nrm, D)
    return y, log_ndtr(-np.linalg.norm(y, axis=1))


class _Shape:
    """Combinatorics of P shared by every point (translation invariant): vertex-facet incidence ``inc`` (V, F),
    ray-facet incidence ``rinc`` (R, F), candidate edges (vertex pairs sharing >= S-1 facets), vertex-ray pairs
    (sharing >= S-1 facets) and ray pairs (sharing >= S-2 facets). Candidates that are not edges of P only add
    points inside the slices, which leaves the slices' convex hulls unchanged."""

    def __init__(self, Nrm, D0, Yv0, Yr):
        k = Nrm.shape[1]
        tol = _INC * (1.0 + np.abs(D0))
        self.inc = np.abs(Yv0 @ Nrm.T - D0[None]) <= tol[None]
        self.rinc = np.abs(Yr @ Nrm.T) <= _INC if Yr.size else np.zeros((0, Nrm.shape[0]), dtype=bool)
        share = self.inc.astype(np.int64) @ self.inc.T.astype(np.int64)
        a, b = np.nonzero(np.triu(share >= k - 1, 1))
        self.ea, self.eb = a, b
        vr = self.inc.astype(np.int64) @ self.rinc.T.astype(np.int64)
        self.va, self.rb = np.nonzero(vr >= k - 1)
        rr = self.rinc.astype(np.int64) @ self.rinc.T.astype(np.int64)
        self.ra, self.rb2 = np.nonzero(np.triu(rr >= k - 2, 1))


def _facet_ranges(shape: _Shape, hv, hr):
    """(M, F) lowest and highest height of each facet (over its vertices; +-inf along its rays)."""
    big = np.where(shape.inc[None], hv[:, :, None], np.inf).min(axis=1)
    top = np.where(shape.inc[None], hv[:, :, None], -np.inf).max(axis=1)
    if hr.size:
        down = np.any(shape.rinc[None] & (hr[:, :, None] < -1e-12), axis=1)
        up = np.any(shape.rinc[None] & (hr[:, :, None] > 1e-12), axis=1)
        big = np.where(down, -np.inf, big)
        top = np.where(up, np.inf, top)
    return big, top


def _inner_width(tol):
    """(M,) the first round's window half-width beyond ``|y*|``: ``sqrt(2 (log(1 / tol) + INNER_MARGIN))``, at most
    ``WINDOW`` (heavy pairs 8.1, the lightest 6.2 instead of 10)."""
    return np.minimum(np.sqrt(np.maximum(2.0 * (np.log(1.0 / tol) + INNER_MARGIN), 0.0)), WINDOW)


def _gauss_tails(A, B, lo, hi):
    """(M,) log of the Gaussian bounds ``Q(-A) + Q(B)`` on the mass of P outside the heights [A, B] (each side only
    where P reaches beyond it): P's mass at heights ``t > B`` is at most the standard normal's, ``Q(B)``."""
    with np.errstate(divide="ignore"):
        low = np.where(A > lo, log_ndtr(A), -np.inf)
        high = np.where(B < hi, log_ndtr(-B), -np.inf)
    return np.logaddexp(low, high)


def _gauss_tail_moment(A, B, lo, hi):
    """(M,) log of a bound on ``E[|y|^2; t outside [A, B]]`` under N(0, I_4) (each side where P reaches beyond it):
    ``int_{|t| > w} t^2 phi = w phi(w) + Q(w)`` plus ``3 Q(w)`` for the three directions of the slices, ``w`` the
    side's distance (<= 0: the whole 4)."""
    out = np.full(A.shape, -np.inf)
    for side, w in ((A > lo, -A), (B < hi, B)):
        with np.errstate(divide="ignore", invalid="ignore"):
            term = np.logaddexp(np.log(np.maximum(w, 1e-300)) - 0.5 * w * w - _LOG_SQRT_2PI, np.log(4.0) + log_ndtr(-w))
        out = np.where(side, np.logaddexp(out, np.where(w > 0.0, term, np.log(4.0))), out)
    return out


def _window(lo, hi, r, width=WINDOW):
    """Integration window (M, 2) inside [lo, hi]: the heights ``|t| <= sqrt(r^2 + WINDOW^2)``, ``r = |y*|`` the
    distance from the mean to P. Off it the integrand is ``e^{-WINDOW^2 / 2}`` below P's largest density
    (``phi(t) P_3(t) <= exp(-max(t^2, r^2) / 2)`` up to a constant: every point of the slice at t is at least
    ``|t|`` and ``r`` from the mean), and its tails are bounded by log-concavity (:func:`_tails`). Along the
    direction to y* (``lo = r``) this is the window ``[r, sqrt(r^2 + WINDOW^2)]`` of the rule before."""
    R = np.sqrt(r * r + width * width)
    return np.maximum(lo, -R), np.minimum(hi, R)


def _panels(lo, hi, A, B, hv):
    """Panels (pair index, left, right) covering [A, B] split at the vertex heights and at Gaussian scale."""
    idx, left, right = [], [], []
    for m in range(A.size):
        if not A[m] < B[m]:
            continue
        cuts = _distinct(np.concatenate([[A[m], B[m]], hv[m][(hv[m] > A[m]) & (hv[m] < B[m])]]))
        a, b = cuts[:-1], cuts[1:]
        span = np.maximum(np.maximum(np.abs(a), np.abs(b)), 1.0)
        n = np.maximum(np.ceil((b - a) / np.minimum(MAX_PANEL, MAX_EXPONENT_STEP / span)).astype(np.intp), 1)
        left_m, right_m = _linspace_panels(a, b, n)
        idx.append(np.full(left_m.size, m))
        left.append(left_m)
        right.append(right_m)
    if not idx:
        return np.zeros(0, dtype=np.intp), np.zeros(0), np.zeros(0)
    return np.concatenate(idx), np.concatenate(left), np.concatenate(right)


def _linspace_panels(a, b, n):
    """The panels of ``np.linspace(a_i, b_i, n_i + 1)`` for every i, concatenated (left and right ends), with
    linspace's arithmetic (``k * ((b - a) / n) + a``, the last edge ``b``): the same bits, one call for all."""
    first = np.repeat(np.cumsum(n) - n, n)
    k = (np.arange(first.size) - first).astype(np.float64)
    i = np.repeat(np.arange(a.size), n)
    step = (b - a) / n
    lo = k * step[i] + a[i]
    hi = (k + 1.0) * step[i] + a[i]
    last = np.cumsum(n) - 1
    hi[last] = b
    return lo, hi


def _distinct(t):
    """Sorted heights with those within ``MERGE`` (relative) of the previous one dropped: vertices at one height up
    to rounding would give panels of width 1e-15 whose slices are degenerate (and whose mass is nothing)."""
    t = np.sort(t)
    keep = np.ones(t.size, dtype=bool)
    last = t[0]
    for i in range(1, t.size):
        if t[i] - last <= MERGE * (1.0 + abs(last)):
            keep[i] = False
        else:
            last = t[i]
    if not keep[-1]:  # the window's end stays
        keep[np.nonzero(keep)[0][-1]] = t.size == 1
        keep[-1] = True
    return t[keep]


class _Problem:
    """One region's data for M points in whitened coordinates, with the per-point frames and heights."""

    def __init__(self, Nrm, D, Yv, Yr, closest, direction=None):
        self.Nrm, self.D, self.Yv, self.Yr = Nrm, D, Yv, Yr
        M = D.shape[0]
        self.shape = _Shape(Nrm, D[0], Yv[0], Yr)
        self.e = _directions(closest) if direction is None else np.tile(direction, (M, 1))
        self.V = _frame(self.e)
        self.hv = np.einsum("mvk,mk->mv", Yv, self.e)
        self.hr = Yr @ self.e.T if Yr.size else np.zeros((0, M))
        self.hr = self.hr.T  # (M, R)
        self.fmin, self.fmax = _facet_ranges(self.shape, self.hv, self.hr)
        down = np.any(self.hr < -1e-12, axis=1) if Yr.size else np.zeros(M, dtype=bool)
        up = np.any(self.hr > 1e-12, axis=1) if Yr.size else np.zeros(M, dtype=bool)
        self.lo = np.where(down, -np.inf, self.hv.min(axis=1))
        self.hi = np.where(up, np.inf, self.hv.max(axis=1))
        self.a = np.einsum("fk,mk->mf", Nrm, self.e)  # (M, F)
        NV = np.einsum("fk,mkj->mfj", Nrm, self.V)  # (M, F, 3)
        self.scale = np.linalg.norm(NV, axis=2)
        self.Nn = NV / np.where(self.scale > _ZERO, self.scale, 1.0)[..., None]

    def _masks(self, m, t):
        """The slice's combinatorial type at height t for point m: active facets, crossing edges, vertex-ray pairs
        that reach t (each a condition on an interval or half-line of t), or None when a facet perpendicular to
        the slices excludes t."""
        sh = self.shape
        flat = self.scale[m] <= _ZERO
        if np.any(flat & (self.D[m] - t * self.a[m] < 0.0)):
            return None
        act = (self.fmin[m] < t) & (t < self.fmax[m]) & ~flat
        ha, hb = self.hv[m][sh.ea], self.hv[m][sh.eb]
        cross = (np.minimum(ha, hb) <= t) & (t <= np.maximum(ha, hb)) & (ha != hb)
        ok = np.zeros(0, dtype=bool)
        if self.Yr.size:
            hrv = self.hr[m][sh.rb]
            with np.errstate(divide="ignore", invalid="ignore"):
                ok = (np.abs(hrv) > 1e-12) & ((t - self.hv[m][sh.va]) / hrv >= 0.0)
        return act, cross, ok

    def _rays(self, m):
        """(R', 3) the slices' rays for point m (independent of t): rays of P parallel to the slices and the
        combinations of pairs of rays on either side, in the frame ``V[m]``, unit length."""
        sh = self.shape
        if not self.Yr.size:
            return np.zeros((0, 3))
        hr = self.hr[m]
        h1, h2 = hr[sh.ra], hr[sh.rb2]
        opp = h1 * h2 < 0.0
        R = np.concatenate([self.Yr[np.abs(hr) <= 1e-12],
                            np.abs(h2[opp, None]) * self.Yr[sh.ra[opp]] + np.abs(h1[opp, None]) * self.Yr[sh.rb2[opp]]])
        R = R @ self.V[m]
        n = np.linalg.norm(R, axis=1)
        return R[n > 1e-12] / n[n > 1e-12, None]

    def slices(self, m, ts) -> list[Polytope | None]:
        """The slices of P at heights ``ts`` (T,) for point m as 3-D polytopes in the frame ``V[m]`` (None: empty),
        built together when ``ts`` share one combinatorial type (checked at the lowest and highest height: every
        condition of :meth:`_masks` holds on an interval of t), else one by one."""
        lo, hi = self._masks(m, ts.min()), self._masks(m, ts.max())
        same = lo is not None and hi is not None and all(np.array_equal(a, b) for a, b in zip(lo, hi))
        if not same:
            return [self._build(m, np.array([t]), self._masks(m, t))[0] for t in ts]
        return self._build(m, ts, lo)

    def slice(self, m, t) -> Polytope | None:
        """The slice of P at height t for point m as a 3-D polytope in the frame ``V[m]`` (None: empty)."""
        return self._build(m, np.array([t]), self._masks(m, t))[0]

    def _build(self, m, ts, masks):
        """Slices at heights ``ts`` (T,) sharing the combinatorial type ``masks``: vertices on the crossing edges
        and on the rays from the vertices, offsets of the active facets, all affine in t."""
        if masks is None:
            return [None] * ts.size
        act, cross, ok = masks
        sh = self.shape
        if not act.any():
            return [None] * ts.size
        hv, Yv = self.hv[m], self.Yv[m]
        off = (self.D[m, act][None] - ts[:, None] * self.a[m, act][None]) / self.scale[m, act][None]  # (T, F')
        ia, ib = sh.ea[cross], sh.eb[cross]
        lam = (ts[:, None] - hv[ia][None]) / (hv[ib] - hv[ia])[None]  # (T, E')
        pts = [Yv[ia][None] + lam[..., None] * (Yv[ib] - Yv[ia])[None]]
        if self.Yr.size:
            iv, ir = sh.va[ok], sh.rb[ok]
            sray = (ts[:, None] - hv[iv][None]) / self.hr[m][ir][None]
            pts.append(Yv[iv][None] + sray[..., None] * self.Yr[ir][None])
        P = np.concatenate(pts, axis=1) @ self.V[m]  # (T, n, 3)
        if P.shape[1] == 0:
            return [None] * ts.size
        R, Nn = self._rays(m), self.Nn[m, act]
        return [Polytope(Nn, off[i], P[i], R, np.zeros((0, 3))) for i in range(ts.size)]


def _slices(prob: _Problem, pidx, nodes):
    """The slice polytopes at ``nodes`` of points ``pidx`` and the indices of the non-empty ones; ``nodes`` come in
    panels of 15 (one panel's nodes share a point and, between vertex heights, a combinatorial type)."""
    polys, where = [], []
    for k in range(0, nodes.size, 15):
        q = k + np.nonzero(np.isfinite(nodes[k:k + 15]))[0]  # NaN: the padding of the 7-point rule
        if not q.size:
            continue
        for qi, p in zip(q, prob.slices(pidx[q[0]], nodes[q])):
            if p is not None:
                polys.append(p)
                where.append(qi)
    return polys, np.array(where, dtype=np.intp)


USE_COMPILED_SLICES = True  # False: the numpy reference (:func:`_evaluate_reference`), kept as the oracle of the tests


def _evaluate(prob: _Problem, pidx, nodes, qlw, known, moments, accuracy, tol):
    """Slices at ``nodes`` of points ``pidx``: :func:`_evaluate_compiled` (``USE_COMPILED_SLICES``) or
    :func:`_evaluate_reference`; the same values to rounding."""
    run = _evaluate_compiled if USE_COMPILED_SLICES else _evaluate_reference
    return run(prob, pidx, nodes, qlw, known, moments, accuracy, tol)


def _evaluate_compiled(prob: _Problem, pidx, nodes, qlw, known, moments, accuracy, tol):
    """:func:`_evaluate_reference` with the slices' S = 3 geometry built in one compiled pass
    (:func:`.slice_kernel.slice_geometry`) and handed to the S = 3 kernel as it is, the light slices' closest
    points compiled too (:func:`.slice_kernel.closest_in_slices`), and the slices the strict kernel pass leaves
    resolved on the same arrays (:func:`_resolve`); only what that leaves is built as polytopes."""
    from .slice_kernel import EMPTY, REGULAR, closest_in_slices, slice_geometry

    K = nodes.size
    lm = np.full(K, -np.inf)
    rel = np.zeros(K)
    logphi = -0.5 * nodes * nodes - _LOG_SQRT_2PI
    geo = slice_geometry(prob, pidx, nodes)
    where = np.nonzero(geo.status != EMPTY)[0]
    lskip = np.full(K, -np.inf)
    if not where.size:
        return logphi + lm, np.zeros((K, 4)), np.zeros((K, 4, 4)), rel, lskip
    where, first, lskip = _screened_kernel(geo, where, pidx, qlw, logphi, known, tol, moments, accuracy)
    if not where.size:
        return logphi + lm, np.zeros((K, 4)), np.zeros((K, 4, 4)), rel, lskip
    n = where.size
    est = np.where((geo.status[where] == REGULAR) & np.isfinite(first.log_mass), first.log_mass, -np.inf)
    done, light, need, lws = _triage(first, est, where, (qlw, logphi, known, pidx, tol), moments, (lm, rel))
    mx, cx = np.zeros((n, 3)), np.zeros((n, 3, 3))
    if moments >= 1:
        mx[done] = first.mean[done]
        if np.any(light):
            mx[light] = closest_in_slices(geo, where[light])
        if moments >= 2:
            cx[done] = first.cov[done]
    if np.any(need):  # the rest: the S = 3 kernel with thresholds loosened by share, then the cubature (_resolve)
        run = _resolve if COMPILED_RESOLVE else _resolve_polytopes_geo
        lm[where[need]], rel[where[need]], mx[need], cx[need] = run(prob, (pidx, nodes), geo, where[need], lws[need],
                                                                    moments, accuracy)
    return _lift(prob, pidx, nodes, where, logphi, (lm, rel, mx, cx), moments) + (lskip,)


def _kernel(geo, rows, moments, accuracy, lws=None):
    """The S = 3 kernel on the slices ``rows`` of ``geo`` at strict thresholds (``lws``: loosened by weight)."""
    from ..polytopes import batch_solid_moments

    return batch_solid_moments(geo, rows, np.zeros((rows.size, 3)), moments, lws, cov_relative=accuracy == "relative")


def _resolve(prob, at, geo, rows, lws, moments, accuracy):
    """The slices ``rows`` of ``geo`` (at ``at = (pidx, nodes)``) that the strict kernel pass left, as the S = 3 batch
    path treats its pairs (``polytopes._solid_batch``) but on the compiled slices: the kernel with thresholds
    loosened by ``lws`` (:func:`_shares`), then what it flags or whose covariance may cancel by the compiled
    adaptive cubature (``solid.cubature.adaptive_cubature``, on the slice's vertices taken from the 4-D polytope,
    :func:`.slice_kernel.slice_ends`), and what that leaves (degenerate or unbounded slices, the cubature's misses)
    through ``polytopes.integrate_pairs`` on the slices built as polytopes (:func:`_resolve_polytopes`). Returns
    ``(lm, rel, mx, cx)`` for the rows."""
    from ..solid import loosen_factors
    from ..solid.cubature import adaptive_cubature
    from .slice_kernel import REGULAR, slice_ends

    n = rows.size
    lm, rel, mx, cx = np.full(n, -np.inf), np.zeros(n), np.zeros((n, 3)), np.zeros((n, 3, 3))
    left = geo.status[rows] != REGULAR
    reg = np.nonzero(~left)[0]
    if reg.size:
        out = _kernel(geo, rows[reg], moments, accuracy, lws[reg])
        _put((lm, rel, mx, cx), reg[~out.flagged], out, ~out.flagged, moments)
        again = np.nonzero(out.flagged | out.refine)[0]
        ends, found = slice_ends(prob, *at, geo, rows[reg[again]])
        sel = again[found]
        cub = adaptive_cubature(geo.arrays, rows[reg[sel]], loosen_factors(lws[reg[sel]] + out.log_mass[sel]), moments,
                                ends[found])
        good = cub[4]
        _put((lm, rel, mx, cx), reg[sel[good]], (cub[0], cub[1], cub[2], cub[3]), good, moments)
        missed = np.ones(n, dtype=bool)
        missed[reg[sel[good]]] = False
        left[reg[out.flagged]] = missed[reg[out.flagged]]
    if np.any(left):
        lm[left], rel[left], mx[left], cx[left] = _resolve_polytopes(prob, at, rows[left], lws[left], moments, accuracy)
    return lm, rel, mx, cx


COMPILED_RESOLVE = True  # False: every slice the strict kernel pass leaves is built as a polytope and goes through
# polytopes.integrate_pairs (kernel, pair_cubature, nested S = 3 quadrature), the route before (bench_s4 compares)


def _resolve_polytopes_geo(prob, at, geo, rows, lws, moments, accuracy):
    """:func:`_resolve_polytopes` with :func:`_resolve`'s signature (``COMPILED_RESOLVE = False``)."""
    return _resolve_polytopes(prob, at, rows, lws, moments, accuracy)


def _put(dest, idx, src, sel, moments):
    """``src = (log_mass, mean, cov, rel)`` rows ``sel`` into ``dest = (lm, rel, mx, cx)`` at ``idx``."""
    lm, rel, mx, cx = dest
    lm[idx], rel[idx] = src[0][sel], src[3][sel]
    if moments >= 1:
        mx[idx] = src[1][sel]
    if moments >= 2:
        cx[idx] = src[2][sel]


def _resolve_polytopes(prob, at, rows, lws, moments, accuracy):
    """The slices ``rows`` built as polytopes (``_Problem.slice``) through the S = 3 batch path with its fallbacks
    (``polytopes.integrate_pairs``: kernel, cubature, nested quadrature), thresholds loosened by ``lws``."""
    from ..pairs import PairRequest
    from ..polytopes import batch_geometry, integrate_pairs

    pidx, nodes = at
    polys = [prob.slice(pidx[k], nodes[k]) for k in rows]
    nn = len(polys)
    eye = np.broadcast_to(np.eye(3), (nn, 3, 3))
    req = PairRequest.build(polys, np.zeros((nn, 1, 3)), eye, moments=moments, accuracy=accuracy,
                            log_weight_scale=lws[:, None], geometry=batch_geometry(polys, eye, eye))
    out = integrate_pairs(req)
    rel = -np.expm1(-out.log_mass_error[:, 0]) if out.log_mass_error is not None else np.zeros(nn)
    mx = out.mean[:, 0] if moments >= 1 else np.zeros((nn, 3))
    cx = out.cov[:, 0] if moments >= 2 else np.zeros((nn, 3, 3))
    return out.log_mass[:, 0], rel, mx, cx


def _screened_kernel(geo, where, pidx, qlw, logphi, known, tol, moments, accuracy):
    """The S = 3 kernel on the slices ``where`` that can matter; the others are skipped (``f = 0``, their bound
    returned in ``lskip`` (K,)). A slice at height t whose point closest to the origin is at distance d has
    ``phi(t) P_3 <= phi(t) Q(d)`` (it lies beyond the supporting plane there): a node whose weighted bound is below
    ``SKIP_SHARE tol / n`` of its pair's mass (n: the pair's nodes in this round) is skipped, so a round skips at
    most ``SKIP_SHARE tol`` of the mass, and the skipped bounds (times the rule's weight and its ``|K - G|`` weight)
    enter the pair's bar. The pair's mass is not known before the kernel runs: the nodes whose bound is above the
    threshold relative to the sum of the bounds (an upper bound on the mass) run first, and the rest are judged
    against that first estimate (a lower one, up to the kernel's error) plus ``known``. Returns the rows run,
    their kernel output (in the order of ``where``) and ``lskip``."""
    from ..pairs import SolidPairs
    from .slice_kernel import REGULAR, closest_in_slices

    reg = geo.status[where] == REGULAR
    lskip = np.full(qlw.size, -np.inf)
    if SKIP_SHARE <= 0.0 or not np.any(reg):
        return where, _kernel(geo, where, moments, accuracy), lskip
    M = known.size
    lb = np.full(where.size, np.inf)  # log bound on each node's weighted contribution (degenerate slices: none)
    d = np.linalg.norm(closest_in_slices(geo, where[reg]), axis=1)
    lb[reg] = qlw[where[reg]] + logphi[where[reg]] + log_ndtr(-d)
    pw = pidx[where]
    with np.errstate(divide="ignore"):
        lthr = np.log(SKIP_SHARE * tol[pw] / np.bincount(pw, minlength=M)[pw])
    upper = _group_lse(pw, np.minimum(lb, 0.0), M)
    a = lb >= lthr + np.logaddexp(upper, known)[pw]
    out_a = _kernel(geo, where[a], moments, accuracy)
    fin = np.isfinite(out_a.log_mass) & reg[a] & ~out_a.flagged  # the estimates the kernel vouches for
    est = _group_lse(pw[a][fin], (qlw + logphi)[where[a]][fin] + out_a.log_mass[fin], M)
    b = ~a & (lb >= lthr + np.logaddexp(est, known)[pw])
    skip = ~a & ~b
    lskip[where[skip]] = lb[skip] - qlw[where[skip]]
    if not np.any(b):
        return where[a], out_a, lskip
    out_b = _kernel(geo, where[b], moments, accuracy)
    order = np.argsort(np.concatenate([np.nonzero(a)[0], np.nonzero(b)[0]]), kind="stable")
    merged = [None if x is None else np.concatenate([x, y])[order] for x, y in zip(out_a, out_b)]
    return where[a | b], SolidPairs(*merged), lskip


def _lift(prob, pidx, nodes, where, logphi, slices, moments):
    """The slices' log masses, bounds and 3-D moments ``slices = (lm, rel, mx, cx)`` (``mx``, ``cx`` in the frames
    ``V``, rows ``where``) lifted to 4-D, ``y = t e + V x``: ``(log f, mean_y, cov_y, rel)`` at every node."""
    lm, rel, mx, cx = slices
    K = nodes.size
    my, cy = np.zeros((K, 4)), np.zeros((K, 4, 4))
    if moments >= 1:
        V = prob.V[pidx[where]]  # (k, 4, 3)
        mx = np.where(np.isfinite(lm[where])[:, None], mx, 0.0)
        my[where] = nodes[where, None] * prob.e[pidx[where]] + np.einsum("kij,kj->ki", V, mx)
        if moments >= 2:
            cx = np.where(np.isfinite(lm[where])[:, None, None], cx, 0.0)
            cy[where] = np.einsum("kij,kjl,kml->kim", V, cx, V)
    return logphi + lm, my, cy, np.where(np.isfinite(lm), rel, 0.0)


def _evaluate_reference(prob: _Problem, pidx, nodes, qlw, known, moments, accuracy, tol):
    """Slices at ``nodes`` (K,) of points ``pidx`` (K,) with log quadrature weights ``qlw`` (K,): ``(log f, mean_y
    (K, 4), cov_y (K, 4, 4), rel)``. One pass of the compiled S = 3 kernel with the moments settles the slices it
    resolves at its strict thresholds; the others go through one call of the S = 3 batch integrator
    (``polytopes.integrate_pairs``), told each slice's weight in its pair's total (``log_weight_scale``: the total
    estimated by the kernel pass, plus ``known`` (M,), the log mass of the panels already done),
    scaled so that the kernels accept a slice of share ``s`` of its pair's mass up to a relative
    error ``SLICE_SHARE tol / s`` (``tol`` (M,): the pairs' tolerances; never beyond the kernels' own cap,
    1e-6): slices of small weight are not sent to the slow exact fallbacks for accuracy that cannot matter.
    Each slice's error bound is returned and enters the pair's bar, whatever weight was assumed."""
    from ..pairs import PairRequest
    from ..polytopes import batch_geometry, batch_solid_moments, integrate_pairs

    K = nodes.size
    lm = np.full(K, -np.inf)
    rel = np.zeros(K)
    my = np.zeros((K, 4))
    cy = np.zeros((K, 4, 4))
    polys, where = _slices(prob, pidx, nodes)
    logphi = -0.5 * nodes * nodes - _LOG_SQRT_2PI
    if not polys:
        return logphi + lm, my, cy, rel, np.full(K, -np.inf)
    n = len(polys)
    eye = np.broadcast_to(np.eye(3), (n, 3, 3))
    geo = batch_geometry(polys, eye, eye)
    # one kernel pass with the moments, at the kernels' strict thresholds: the slices it resolves are done
    first = batch_solid_moments(geo, np.arange(n), np.zeros((n, 3)), moments, cov_relative=accuracy == "relative")
    est = np.where(geo.ok & np.isfinite(first.log_mass), first.log_mass, -np.inf)
    done, light, need, lws = _triage(first, est, where, (qlw, logphi, known, pidx, tol), moments, (lm, rel))
    mx, cx = np.zeros((n, 3)), np.zeros((n, 3, 3))
    if moments >= 1:
        mx[done] = first.mean[done]
        mx[light] = _closest_in_slices([p for p, lt in zip(polys, light) if lt])
        if moments >= 2:
            cx[done] = first.cov[done]
    if np.any(need):  # the rest through the S = 3 batch path with its fallbacks, thresholds loosened by share
        req = PairRequest.build(polys, np.zeros((n, 1, 3)), eye, moments=moments, accuracy=accuracy,
                                log_weight_scale=lws[:, None], geometry=geo, need=need[:, None])
        out = integrate_pairs(req)
        lm[where[need]] = out.log_mass[need, 0]
        rel[where[need]] = (-np.expm1(-out.log_mass_error[need, 0]) if out.log_mass_error is not None else 0.0)
        if moments >= 1:
            mx[need] = out.mean[need, 0]
        if moments >= 2:
            cx[need] = out.cov[need, 0]
    return _lift(prob, pidx, nodes, where, logphi, (lm, rel, mx, cx), moments) + (np.full(K, -np.inf),)


def _triage(first, est, where, weights, moments, out):
    """Sort the slices ``where`` after the kernel's first pass ``first`` (estimates ``est``): ``done`` (resolved
    by the kernel), ``light`` (their share of the pair's estimated mass lets them keep the estimate, :func:`_light`)
    and ``need`` (the S = 3 batch path with its fallbacks, thresholds loosened by ``lws``, :func:`_shares`).
    ``weights = (qlw, logphi, known, pidx, tol)`` per node and pair; writes the estimates of the done and light
    slices into ``out = (lm, rel)`` with their bounds."""
    qlw, logphi, known, pidx, tol = weights
    lm, rel = out
    done = np.isfinite(est) & ~first.flagged
    if moments >= 2:
        done &= ~first.refine
    contrib = np.full(lm.shape[0], -np.inf)
    contrib[where] = qlw[where] + logphi[where] + est
    total = np.logaddexp(known, _group_lse(pidx, contrib, known.size))
    share, lws = _shares(qlw[where] + logphi[where], est, total[pidx[where]], tol[pidx[where]], moments)
    light = _light(est, first.rel, share, tol[pidx[where]], moments) & ~done & ~first.flagged
    lm[where] = np.where(light | done, est, -np.inf)
    rel[where] = first.rel
    return done, light, ~done & ~light, lws


def _shares(lwq, est, total, tol, moments):
    """Each slice's share of its pair's estimated mass (``lwq``: log quadrature weight times phi) and the
    ``log_weight_scale`` that lets the S = 3 kernels accept it up to a relative error ``SLICE_SHARE tol / share``
    (the kernels accept ``rel <= 1e-13 / w``; their moment thresholds loosen with ``1 / w`` too: no further than
    the pair's own)."""
    with np.errstate(invalid="ignore", over="ignore"):
        allow = np.log(_KERNEL_ALLOWANCE / (SLICE_SHARE * tol))
        if moments >= 1:
            allow = np.maximum(allow, np.log(DEFAULT_TOL / tol))
        lws = lwq - total + allow
        share = np.exp(lwq + est - total)
    return share, np.where(np.isnan(lws), np.inf, lws)


def _light(est, rel, share, tol, moments):
    """Slices too light to matter: they keep the kernel's first estimate and bound, when that bound times their share
    is within ``SLICE_SHARE`` of the pair's tolerance (it enters the pair's bar; :func:`_triage` takes only the
    estimates the kernel does not flag: a flagged one's bound leaves out its unresolved edge terms, and the tips of
    a tiny box's slices at a vertex height came out 1e2-2e8 times their mass under bounds of 1e-3, issue 14). With
    moments, only up to a share ``LIGHT_SHARE_MOMENTS tol / DEFAULT_TOL`` (their mean: the slice's point closest
    to the origin, no spread; a pair of tolerance ``tol > DEFAULT_TOL`` has posterior weight ``<= 1e-13 / tol``
    (:func:`pair_tolerances`), so what that changes in the posterior moments is below ``1e-11`` of a spread), and
    ``HEAVY_SHARE_MOMENTS`` for the pairs at ``DEFAULT_TOL`` (whose weight may be 1)."""
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(est) & (rel <= 1e-2) & (share * rel <= SLICE_SHARE * tol)
        cap = np.where(tol > DEFAULT_TOL, LIGHT_SHARE_MOMENTS * tol / DEFAULT_TOL, HEAVY_SHARE_MOMENTS)
        return ok if moments < 1 else ok & (share <= cap)

def _closest_in_slices(polys):
    """(k, 3) each slice's point closest to the origin: the stand-in for the mean of a slice too light to matter
    (within about one standard deviation of it, also for unbounded slices in the tail)."""
    return np.array([closest_points(p.H, p.c[None])[0] for p in polys]).reshape(-1, 3)


def _group_lse(idx, vals, M):
    """(M,) ``log sum exp`` of ``vals`` grouped by ``idx``."""
    if M == 1:
        top = np.array([vals.max(initial=-np.inf)])
    else:
        top = np.full(M, -np.inf)
        np.maximum.at(top, idx, vals)
    safe = np.where(np.isfinite(top), top, 0.0)
    acc = np.bincount(idx, weights=np.exp(vals - safe[idx]), minlength=M)  # in input order, as np.add.at adds
    with np.errstate(divide="ignore"):
        return np.where(np.isfinite(top), safe + np.log(acc), -np.inf)


def _tails(prob, pidx_nodes, nodes, logf, A, B):
    """(M,) log of the log-concavity bounds on the mass outside [A, B] (below ``lo`` / above ``hi``: none)."""
    M = A.size
    out = np.full(M, -np.inf)
    for m in range(M):
        sel = pidx_nodes == m
        t, g = nodes[sel], logf[sel]
        fin = np.isfinite(g)
        t, g = t[fin], g[fin]
        if t.size < 2:
            if (A[m] > prob.lo[m] or B[m] < prob.hi[m]) and A[m] < B[m]:
                out[m] = np.inf
            continue
        order = np.argsort(t)
        t, g = t[order], g[order]
        if A[m] > prob.lo[m]:
            s = (g[1] - g[0]) / (t[1] - t[0])
            out[m] = np.logaddexp(out[m], g[0] + s * (A[m] - t[0]) - np.log(s) if s > 0 else np.inf)
        if B[m] < prob.hi[m]:
            s = (g[-1] - g[-2]) / (t[-1] - t[-2])
            out[m] = np.logaddexp(out[m], g[-1] + s * (B[m] - t[-1]) - np.log(-s) if s < 0 else np.inf)
    return out


def sliced_moments(Nrm, D, Yv, Yr, *, moments: int = 2, tol=None, accuracy: str = "relative", closest=None,
                   direction=None):
    """log mass (M,), conditional mean (M, 4), covariance (M, 4, 4) and relative error bar (M,) of ``N(0, I_4)`` on
    ``{Nrm y <= D_m}`` (unit rows ``Nrm`` (F, 4); vertices ``Yv`` (M, V, 4) and unit rays ``Yr`` (R, 4) in the
    same whitened coordinates; no lineality). ``tol`` (M,) or scalar: relative mass error aimed at per point
    (``DEFAULT_TOL``); the bar is reported whether or not it is met. ``closest`` (M, 4): the closest points of P
    to the origin when the caller has them (:func:`closest_distance`). ``direction`` (4,): the unit slicing direction
    for every point (default: :func:`_directions`, or for unbounded P ``sliver.bounded_direction`` where the default's
    margin is below ``sliver.GOOD_MARGIN``: the long region of issue 14, 650 times longer slices along the default
    direction, took 17 s there instead of 6 ms). :func:`bounded_sliced_moments` also returns the moments' bounds."""
    return bounded_sliced_moments(Nrm, D, Yv, Yr, moments=moments, tol=tol, accuracy=accuracy, closest=closest,
                                  direction=direction)[:4]


def bounded_sliced_moments(Nrm, D, Yv, Yr, *, moments: int = 2, tol=None, accuracy: str = "relative", closest=None,
                           direction=None):
    """:func:`sliced_moments` and (M, 2) bounds on the errors of the whitened mean and covariance (max-norm,
    :func:`moment_error_bounds`; zeros without moments, inf where the mass bar is)."""
    D = np.atleast_2d(np.asarray(D, dtype=np.float64))
    M = D.shape[0]
    tol = np.broadcast_to(np.asarray(DEFAULT_TOL if tol is None else tol, dtype=np.float64), (M,))
    Nrm = np.asarray(Nrm, dtype=np.float64)
    if closest is None:
        closest, _ = closest_distance(Nrm, D)
    Yr = np.asarray(Yr, dtype=np.float64).reshape(-1, 4)
    if direction is None and Yr.size:  # unbounded: slices bounded and not much longer than P (sliver)
        from .sliver import bounded_direction

        direction = bounded_direction(Yr, _directions(closest[:1])[0])
    prob = _Problem(Nrm, D, Yv, Yr, closest, direction)
    r = np.linalg.norm(closest, axis=1)
    A_full, B_full = _window(prob.lo, prob.hi, r)
    A, B = _window(prob.lo, prob.hi, r, _inner_width(tol))
    pm, left, right = _panels(prob.lo, prob.hi, A, B, prob.hv)
    rule = (tol[pm] >= COARSE_TOL).astype(np.intp)
    done_vals = []
    known = np.full(M, -np.inf)
    for rnd in range(MAX_ROUNDS + 1):
        half, mid = 0.5 * (right - left), 0.5 * (right + left)
        nodes = (mid[:, None] + half[:, None] * RULE_NODES[rule]).ravel()
        pidx = np.repeat(pm, 15)
        with np.errstate(divide="ignore"):
            qlw = (np.log(half)[:, None] + np.log(RULE_WEIGHTS[rule])).ravel()
        logf, my, cy, rel, lskip = _evaluate(prob, pidx, nodes, qlw, known, moments, accuracy, tol)
        vals = (pm, half, logf.reshape(-1, 15), my.reshape(-1, 15, 4), cy.reshape(-1, 15, 4, 4), rel.reshape(-1, 15),
                nodes.reshape(-1, 15), rule, lskip.reshape(-1, 15))
        done_vals.append(vals)
        total, _, _ = _combine(M, done_vals)
        diff = _panel_diff(vals, total)  # (P,) relative |K - G| of each panel
        if rnd == MAX_ROUNDS:
            break
        npan = np.bincount(np.concatenate([v[0] for v in done_vals]), minlength=M).astype(float)
        bad = diff > 0.25 * tol[pm] / np.maximum(npan[pm], 1.0)
        wide = _widen(prob, total, tol, (A, B), (A_full, B_full)) if rnd == 0 else np.zeros(M, dtype=bool)
        if not np.any(bad) and not np.any(wide):
            break
        keep = ~bad
        done_vals[-1] = tuple(v[keep] for v in vals)
        known, _, _ = _combine(M, done_vals)
        pm, rule = np.repeat(pm[bad], 2), np.repeat(rule[bad], 2)
        left, right = np.empty(2 * bad.sum()), np.empty(2 * bad.sum())
        lb, rb = (mid - half)[bad], (mid + half)[bad]
        left[0::2], right[0::2] = lb, 0.5 * (lb + rb)
        left[1::2], right[1::2] = 0.5 * (lb + rb), rb
        if np.any(wide):  # the rest of the full window for the pairs whose inner window's tails may matter
            pm, left, right, rule, A, B = _add_outer(prob, tol, wide, (A, B), (A_full, B_full), (pm, left, right, rule))
    total, mean, cov = _combine(M, done_vals, moments)
    allv = [np.concatenate([v[i] for v in done_vals]) for i in range(9)]
    pm_all, half_all, lf_all, rel_all, nodes_all, rule_all = allv[0], allv[1], allv[2], allv[5], allv[6], allv[7]
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        diffs = _panel_diff(allv, total)
        err = np.bincount(pm_all, weights=diffs, minlength=M)
        wl = np.log(half_all)[:, None] + np.log(RULE_WEIGHTS[rule_all]) + lf_all - total[pm_all][:, None]
        slice_err = np.bincount(pm_all, weights=np.where(np.isfinite(wl), np.exp(wl) * rel_all, 0.0).sum(axis=1),
                                minlength=M)
        tails = np.exp(np.minimum(_tails(prob, np.repeat(pm_all, 15), nodes_all.ravel(), lf_all.ravel(), A, B),
                                  _gauss_tails(A, B, prob.lo, prob.hi)) - total)
        skipped = _skipped_bound(pm_all, half_all, rule_all, allv[8], total, M)
        rounding = 64.0 * np.finfo(float).eps * (1.0 + np.abs(total))  # the log's rounding
        cond = input_conditioning(prob, total, np.hypot(r, WINDOW))
        rel = err + slice_err + tails + skipped + rounding + cond
    rel = np.where(np.isfinite(total), rel, np.where(np.isfinite(rel), 0.0, np.inf))
    rel = np.where(np.isnan(rel), np.inf, rel)
    if moments < 1:
        return total, mean, cov, rel, np.zeros((M, 2))
    span = _span(prob, mean, np.hypot(r, WINDOW))
    eb = moment_error_bounds(allv, (total, mean, cov, moments), (tails + skipped, cond), span)
    return total, mean, cov, rel, np.where(np.isfinite(rel)[:, None], eb, np.inf)


def _span(prob: _Problem, mean, reach):
    """(M,) a bound on ``|y - mean|`` (max-norm) over the part of P the moments see: P's diameter when bounded, else
    the window's reach plus ``|mean|``."""
    if not prob.Yr.size and prob.Yv.shape[1]:
        Y = prob.Yv[0]
        return np.full(mean.shape[0], np.abs(Y[:, None] - Y[None]).max())
    return reach + np.abs(mean).max(axis=1)


def moment_error_bounds(allv, result, left, span):
    """(M, 2) bounds on the errors of the sliced whitened mean and covariance (max-norm; ``cones.moment_bounds``'
    convention). ``mean = int f m_t dt / int f dt`` and ``cov = int f (C_t + (m_t - mean)(m_t - mean)^T) dt /
    int f dt`` (slice masses f, means m_t, covariances C_t, NOTES §6's nesting), so the error of each is the error of
    the centred integrands ``f (m_t - mean)`` and ``f (C_t + dd^T - cov)`` over the mass: (i) the Gauss-Kronrod
    difference of each panel applied to them (as the mass bar applies it to f), (ii) each slice's mass bar times
    its centred integrand, (iii) the mass the rule does not see (``left[0]``: the tails and the skipped nodes,
    relative) times ``span`` (``span^2`` for the covariance), ``span`` (M,) bounding ``|y - mean|``, (iv) the input
    conditioning (``left[1]``, relative: moving the facets moves ``int (y - mean) phi`` by at most ``span`` times
    what it moves the mass), (v) the mean's error entering the covariance, ``e_mean^2``, and the rounding.
    ``allv``: :func:`sliced_moments`' panel arrays; ``result = (total, mean, cov, moments)``."""
    total, mean, cov, moments = result
    pm, half, lf, my, cy, rel_k, rule = allv[0], allv[1], allv[2], allv[3], allv[4], allv[5], allv[7]
    M = total.size
    eps = np.finfo(float).eps
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        f = np.exp(lf - total[pm][:, None])
        f = np.where(np.isfinite(f), f, 0.0)
        wk = half[:, None] * RULE_WEIGHTS[rule] * f
        wd = half[:, None] * RULE_DIFF[rule] * f
        rk = np.where(np.isfinite(rel_k), rel_k, np.inf) * wk
        dev = my - mean[pm][:, None, :]
        e1 = np.zeros((M, 4))
        np.add.at(e1, pm, np.abs(np.einsum("pq,pqk->pk", wd, dev)) + np.einsum("pq,pqk->pk", rk, np.abs(dev)))
        mn = np.abs(mean).max(axis=1)
        em = e1.max(axis=1) + left[0] * span + left[1] * span + 16.0 * eps * (mn + span)
        if moments < 2:
            return np.column_stack([em, np.zeros(M)])
        g = cy + dev[..., :, None] * dev[..., None, :] - cov[pm][:, None]
        e2 = np.zeros((M, 4, 4))
        np.add.at(e2, pm, np.abs(np.einsum("pq,pqij->pij", wd, g)) + np.einsum("pq,pqij->pij", rk, np.abs(g)))
        cm = np.abs(cov).max(axis=(1, 2))
        ec = e2.max(axis=(1, 2)) + (left[0] + left[1]) * span * span + em * em + 64.0 * eps * cm
    return np.column_stack([em, ec])


def input_conditioning(prob: _Problem, total, reach):
    """(M,) relative change of the mass (log ``total`` (M,)) that the rounding of the inputs can make, for bounded P:
    the slices take their planes from ``D`` and their corners from ``Yv``, which agree only to the rounding of the
    whitening (``c - H mu`` and ``v - mu`` cancel where ``|mu|`` is large); for a region 1e-4 wide those 7e-15
    moved the mass by 2.7e-10 (issue 14, ``[4, 16, 16, 5]``). Moving every facet by at most ``delta`` changes P by
    at most ``delta int_dP phi dS`` (to first order). With the field ``(y - c) phi``, ``c`` the centre of a ball in P
    (radius ``r``: every facet at least ``r`` from c; about the vertices' centroid, and P's largest, :func:`_inradius`,
    where that gives more than ``CONDITIONING_LP``), the divergence theorem gives
    ``r int_dP phi dS <= int_P (k - (y - c) . y) phi <= P (k + R min(R + |c|, diam)) + E[|y| (|y| + |c|); |y| > R]``,
    ``R`` = ``reach`` (M,) (the window's reach; the tail term only where P reaches beyond it). ``delta``: the largest
    misfit ``|Nrm_f . v - D_f|`` of a vertex within ``R`` on its facet, at least ``4 eps R``. Unbounded P:
    :func:`unbounded_conditioning`."""
    M, k = prob.D.shape[0], prob.Nrm.shape[1]
    Yv = prob.Yv
    out = np.zeros(M)
    if not Yv.shape[1]:
        return out
    if prob.Yr.size:
        return unbounded_conditioning(prob, reach)
    norms = np.linalg.norm(Yv, axis=2)
    clipped = reach < norms.max(axis=1)  # else P lies within R: no tail term
    R = np.where(clipped, reach, norms.max(axis=1))
    misfit = np.abs(np.einsum("fk,mvk->mvf", prob.Nrm, Yv) - prob.D[:, None, :])
    misfit = np.where(prob.shape.inc[None] & (norms <= R[:, None])[..., None], misfit, 0.0).max(axis=(1, 2))
    delta = np.maximum(misfit, 4.0 * np.finfo(float).eps * R)
    diam = np.linalg.norm(Yv[0][:, None] - Yv[0][None], axis=2).max()
    cen = Yv[0].mean(axis=0)  # first the ball about the vertices' centroid (no program; within k + 1 of the largest
    out = _conditioning_term(cen, float(np.min(prob.D[0] - prob.Nrm @ cen)), (Yv, R, clipped, delta, diam, total, k))
    if np.any(out > CONDITIONING_LP):  # then P's largest ball, where the term may matter
        c0, r = _inradius(prob.Nrm, prob.D[0])
        out = np.minimum(out, _conditioning_term(c0, r, (Yv, R, clipped, delta, diam, total, k)))
    return out


CONDITIONING_LP = 1e-11  # input_conditioning's terms above this (relative) are recomputed with P's largest ball


def unbounded_conditioning(prob: _Problem, reach):
    """(M,) :func:`input_conditioning` for unbounded P (rays ``Yr``). The divergence theorem with the field
    ``(y - c) phi`` holds on unbounded P too (the Gaussian decays): for a ball ``B(c, r)`` in P every facet has
    ``n_f . (y - c) >= r`` on it, so ``r int_dP phi dS <= int_P (k - |y|^2 + c . y) phi <= (k + |c|^2 / 4) P``
    (``-|y|^2 + c . y <= |c|^2 / 4``): moving the facets by at most ``delta`` moves the mass by at most
    ``delta (k + |c|^2 / 4) / r`` of itself, with no window and no tail term. ``delta`` bounds how far the slices'
    corners within the window (heights ``|t| <= R``, ``R = reach``) lie off their facets' planes: a vertex's misfit
    ``|Nrm_f . v - D_f|`` on its facets (every vertex: an edge crossing the window may end beyond it), plus for a
    corner ``v + s r`` on a ray from a vertex (``s = (t - e.v) / e.r <= (R + |e.v|) / |e.r|``) the ray's misfit
    ``s |Nrm_f . r|`` on the facets of both, and at least ``4 eps R``. The ball: the best of three along the rays
    and the inward normals at ``y*`` (:func:`_inward_balls`), and where that leaves a term above ``CONDITIONING_LP``
    the program's (:func:`_capped_ball`). Thin unbounded boxes (1e-4 wide in three directions) with their vertices
    1e-15 off their planes, as the partition leaves them: 1.0e-11 off under a quadrature bar of 5.5e-13 without
    this term."""
    from .slice_kernel import _RAY

    M = prob.D.shape[0]
    eps = np.finfo(float).eps
    sh = prob.shape
    mis = np.abs(np.einsum("fk,mvk->mvf", prob.Nrm, prob.Yv) - prob.D[:, None, :])
    delta = np.maximum(np.where(sh.inc[None], mis, 0.0).max(axis=(1, 2)), 4.0 * eps * reach)
    if sh.va.size:
        rmis = np.where(sh.inc[sh.va] & sh.rinc[sh.rb], np.abs(prob.Yr[sh.rb] @ prob.Nrm.T), 0.0).max(axis=1)
        hr = np.abs(prob.hr[:, sh.rb])  # (M, pairs)
        with np.errstate(divide="ignore", invalid="ignore"):
            smax = np.where(hr > _RAY, (reach[:, None] + np.abs(prob.hv[:, sh.va])) / hr, 0.0)
        delta = delta + (smax * rmis[None]).max(axis=1)
    shift = prob.Yv[:, 0] - prob.Yv[0, 0][None]  # point m's coordinates are point 0's translated
    y = closest_points(prob.Nrm, prob.D[:1])[0]
    out = np.full(M, np.inf)
    for c0, r in _inward_balls(prob.Nrm, prob.D[0], prob.Yr, y):
        out = np.minimum(out, _ball_term(c0, r, shift, delta, prob.Nrm.shape[1]))
    if np.any(out > CONDITIONING_LP):  # then the program's ball, where the term may matter
        out = np.minimum(out, _ball_term(*_capped_ball(prob.Nrm, prob.D[0], y), shift, delta, prob.Nrm.shape[1]))
    return out


def covariance_floor(Nrm, D, Yv, Yr):
    """(M,) a lower bound on the covariance bound (``eb[:, 1]``) that :func:`with_fallback` returns for each row of an
    unbounded P = {Nrm y <= D_m}, at any tolerance and along any direction, with any of these rows first; zeros (no
    claim) for bounded P or where a row's mean is inside its P. ``cones.cones_first`` keeps the cones' moments where
    this floor says no pass of the slices can meet the moments' contract (issue 14: ``s4-far30-D6``, two pairs 36-37
    from the mean, 200 s CPU a point in the slices for bounds 10x the cones').

    The slices' covariance bound contains ``cond span^2`` (:func:`moment_error_bounds`) with ``span >= R``, the
    window's reach ``R = hypot(|y*|, WINDOW)``, and ``cond`` (:func:`unbounded_conditioning`) is a minimum of
    ``delta (k + |c|^2 / 4) / r`` over balls B(c, r) in P: ``delta >= 4 eps R``, ``|c| >= d`` (the certified distance,
    ``budget.certified_distance``), and ``r <= 1 + 1e-9 (1 + max |D|)``: the capped ball has ``r <= 1``, an inward
    ball's centre is ``y + s u`` (``s <= 1``, ``|u| = 1``) with y the first row's closest point on a facet f (``on``:
    slack ``<= 1e-9 (1 + |D_f|)``), so ``r <= slack_f(y + s u) <= slack_f(y) + s``. Hence ``floor = 4 eps R^3 (k +
    d^2 / 4) / r_max``, a millionth shaved for the closest points' rounding (two NNLS solvers)."""
    from .budget import certified_distance

    D = np.atleast_2d(np.asarray(D, dtype=np.float64))
    M, k = D.shape[0], Nrm.shape[1]
    Yr = np.asarray(Yr, dtype=np.float64).reshape(-1, k)
    if not Yr.size or not M:
        return np.zeros(M)
    y = closest_points(Nrm, D)
    slack = D - y @ Nrm.T
    on = (slack <= 1e-9 * (1.0 + np.abs(D))).any(axis=1)
    d = certified_distance(y, np.asarray(Yv, dtype=np.float64), Yr)
    if not (on.all() and (d > 0.0).all()):
        return np.zeros(M)
    R = np.hypot(np.linalg.norm(y, axis=1), WINDOW)
    r_max = 1.0 + 1e-9 * (1.0 + np.abs(D).max())
    return (1.0 - 1e-6) * 4.0 * np.finfo(float).eps * R ** 3 * (k + 0.25 * d * d) / r_max


def _ball_term(c0, r, shift, delta, k):
    """(M,) ``delta (k + |c|^2 / 4) / r`` for the ball ``B(c0, r)`` of point 0, translated to each point; inf where
    ``r <= 0``."""
    if not r > 0.0:
        return np.full(shift.shape[0], np.inf)
    return delta * (k + 0.25 * np.sum((c0[None] + shift) ** 2, axis=1)) / r


def _inward_balls(Nrm, D, Yr, y):
    """Balls in ``{Nrm y <= D}`` without a program: centres ``y* + s u`` (``s`` = 1, 1/4, 1/16), ``u`` the unit sum of
    the rays and the inward normals of the facets through ``y*``; radius ``min_f (D_f - Nrm_f . c)``."""
    on = D - Nrm @ y <= 1e-9 * (1.0 + np.abs(D))
    u = Yr.sum(axis=0) - Nrm[on].sum(axis=0)
    n = np.linalg.norm(u)
    if not n > 0.0:
        return []
    return [(y + s * u / n, float(np.min(D - Nrm @ (y + s * u / n)))) for s in (1.0, 0.25, 0.0625)]


def _capped_ball(Nrm, D, y):
    """A ball in the unbounded ``{Nrm y <= D}`` for :func:`unbounded_conditioning`: ``max s`` subject to
    ``Nrm c + s <= D``, ``s <= 1`` and ``|c - y|_inf <= 2`` (scipy's HiGHS; ``y`` the point closest to the origin);
    radius 0 when the program fails."""
    from scipy.optimize import linprog

    F, k = Nrm.shape
    cost = np.zeros(k + 1)
    cost[-1] = -1.0
    res = linprog(cost, A_ub=np.hstack([Nrm, np.ones((F, 1))]), b_ub=D,
                  bounds=[(v - 2.0, v + 2.0) for v in y] + [(0.0, 1.0)], method="highs")
    return (res.x[:k], float(res.x[-1])) if res.status == 0 else (np.zeros(k), 0.0)


def _conditioning_term(c0, r, data):
    """:func:`input_conditioning`'s bound for the ball of centre ``c0`` (in point 0's coordinates) and radius r (the
    same ball for every point, translated); inf where ``r <= 0``."""
    from scipy.stats import chi2

    Yv, R, clipped, delta, diam, total, k = data
    if not r > 0.0:
        return np.full(R.shape, np.inf)
    cn = np.linalg.norm(c0[None] + (Yv[:, 0] - Yv[0, 0][None]), axis=1)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        tail = np.where(clipped, k * chi2.sf(R * R, k + 2) * (1.0 + cn / R) * np.exp(-total), 0.0)
        out = delta * ((k + R * np.minimum(R + cn, diam)) + tail) / r
    return np.where(np.isfinite(out), out, np.inf)


def _inradius(Nrm, D):
    """The centre (k,) and radius of the largest ball in the bounded ``{Nrm y <= D}`` (unit rows): ``max s`` subject to
    ``Nrm c + s <= D`` (scipy's HiGHS); radius 0 when the program fails. One program a region: the ball of one
    point's coordinates is the others' translated."""
    from scipy.optimize import linprog

    F, k = Nrm.shape
    cost = np.zeros(k + 1)
    cost[-1] = -1.0
    res = linprog(cost, A_ub=np.hstack([Nrm, np.ones((F, 1))]), b_ub=D, bounds=[(None, None)] * k + [(0.0, None)],
                  method="highs")
    return (res.x[:k], float(res.x[-1])) if res.status == 0 else (np.zeros(k), 0.0)


def _skipped_bound(pm, half, rule, lskip, total, M):
    """(M,) relative bound on what the skipped nodes (``lskip``: log bounds on their integrand, -inf elsewhere)
    change in the K15 value and in the panels' ``|K - G|``: ``sum half (w_K + |w_K - w_G|) bound / mass``."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        lw = np.log(half)[:, None] + np.log(RULE_WEIGHTS[rule] + np.abs(RULE_DIFF[rule])) + lskip - total[pm][:, None]
    return np.bincount(pm, weights=np.where(np.isfinite(lw), np.exp(lw), 0.0).sum(axis=1), minlength=M)


def _widen(prob, total, tol, inner, full):
    """(M,) pairs whose first window ``inner = (A, B)`` leaves out more than ``TAIL_SHARE tol`` of their estimated
    mass ``total`` by the Gaussian bound on the tails' second moment (:func:`_gauss_tail_moment`, which bounds the
    tails' mass and their pull on the mean and covariance too) and is narrower than ``full``."""
    A, B = inner
    narrower = (A > full[0]) | (B < full[1])
    with np.errstate(invalid="ignore"):
        big = ~(_gauss_tail_moment(A, B, prob.lo, prob.hi) - total <= np.log(TAIL_SHARE * tol))
    return narrower & big


def _add_outer(prob, tol, wide, inner, full, panels):
    """The panels between the inner and the full window of the pairs ``wide``, appended to ``panels = (pm, left,
    right, rule)``; returns them and the widened windows."""
    A, B = inner
    pm, left, right, rule = panels
    none = np.full(A.shape, np.nan)
    for a, b in ((np.where(wide, full[0], none), np.where(wide, A, none)),
                 (np.where(wide, B, none), np.where(wide, full[1], none))):
        p2, l2, r2 = _panels(prob.lo, prob.hi, a, b, prob.hv)
        pm, left, right = np.concatenate([pm, p2]), np.concatenate([left, l2]), np.concatenate([right, r2])
        rule = np.concatenate([rule, (tol[p2] >= COARSE_TOL).astype(np.intp)])
    return pm, left, right, rule, np.where(wide, full[0], A), np.where(wide, full[1], B)


def _panel_diff(vals, total):
    """Relative ``|K15 - G7|`` (``|K7 - G3|``) of each panel, against the pair's total mass."""
    pm, half, lf, rule = vals[0], vals[1], vals[2], vals[7]
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        f = np.exp(lf - total[pm][:, None])
        f = np.where(np.isfinite(f), f, 0.0)
        d = np.abs(half * (RULE_DIFF[rule] * f).sum(axis=1))
    return np.where(np.isfinite(total[pm]), d, 0.0)


def _lse_rows(a):
    """Row-wise ``log sum exp`` of ``a`` (M, n) with no finite entry giving -inf: ``max + log sum exp(a - max)``
    (scipy's ``logsumexp`` costs ~0.5 ms a call in argument handling, called twice a round)."""
    top = a.max(axis=1)
    fin = np.isfinite(top)
    safe = np.where(fin, top, 0.0)
    with np.errstate(divide="ignore"):
        return np.where(fin, safe + np.log(np.exp(a - safe[:, None]).sum(axis=1)), top)


def _combine(M, done_vals, moments=0):
    """Totals (log) and conditional moments from every panel evaluated so far (Kronrod weights)."""
    pm = np.concatenate([v[0] for v in done_vals])
    half = np.concatenate([v[1] for v in done_vals])
    lf = np.concatenate([v[2] for v in done_vals])
    rule = np.concatenate([v[7] for v in done_vals])
    with np.errstate(divide="ignore", invalid="ignore"):
        lw = np.log(half)[:, None] + np.log(RULE_WEIGHTS[rule]) + lf  # (P, 15)
    lw = np.where(np.isnan(lw), -np.inf, lw)
    P = pm.size
    per_pair = np.full((M, 1), -np.inf)
    if P and M == 1:  # one point: the grid below is lw itself, in its order (the same sums, the same bits)
        per_pair = lw.reshape(1, -1)
    elif P:
        order = np.argsort(pm, kind="stable")
        counts = np.bincount(pm, minlength=M)
        width = int(counts.max()) * 15
        grid = np.full((M, max(width, 1)), -np.inf)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        pos = np.arange(P) - starts[pm[order]]
        cols = (pos[:, None] * 15 + np.arange(15)[None]).ravel()
        grid[np.repeat(pm[order], 15), cols] = lw[order].ravel()
        per_pair = grid
    total = _lse_rows(per_pair)
    if moments < 1:
        return total, None, None
    my = np.concatenate([v[3] for v in done_vals])
    with np.errstate(invalid="ignore", over="ignore"):
        w = np.exp(lw - total[pm][:, None])
    w = np.where(np.isfinite(w), w, 0.0)
    mean = np.zeros((M, 4))
    np.add.at(mean, pm, np.einsum("pq,pqk->pk", w, my))
    if moments < 2:
        return total, mean, None
    cy = np.concatenate([v[4] for v in done_vals])
    dev = my - mean[pm][:, None, :]
    part = np.einsum("pq,pqij->pij", w, cy) + np.einsum("pq,pqi,pqj->pij", w, dev, dev)
    cov = np.zeros((M, 4, 4))
    np.add.at(cov, pm, part)
    return total, mean, 0.5 * (cov + np.swapaxes(cov, 1, 2))


# ---------------------------------------------------------------------------------------------------
# The S = 4 batch path of ``polytopes.integrate_pairs`` (``BATCH_INTEGRATORS[4]``)
# ---------------------------------------------------------------------------------------------------

COMPILED_FLAGS = True  # False: SlicedGeometry.cone_shape builds the flags in numpy (cones.cone_shape, ~1.0 ms a region
# against 0.065 ms; the route before; the same combinatorics, the numbers within ~1e-15)
FALLBACK_REL = 1e-3  # pairs whose sliced bar exceeds this (or is unknown) also get the RQMC estimate
MAX_TOL = 1e-4  # light pairs: the tolerance is loosened by LOOSEN_WEIGHT / w up to this relative error


class SlicedGeometry:
    """Per-region data of the S = 4 batch (``polytopes.GEOMETRIES[4]``): lower-triangular factors ``chol`` (R, 4, 4)
    of Sigma_omega (the caller's accurate factors when given; None if one is not positive definite) and ``ok``
    (R,): regions with facets and without lineality (the others take the per-region path).

    It also keeps, built on first use, each region's cone flags (:meth:`cone_shape`) and whitened log volume
    (:meth:`log_volumes`): both depend on the region and Sigma_omega only, and ``engine.evaluate`` keeps one geometry
    per partition for all its row blocks (``[4, 16, 16, 5]``: 7 points a block, so the flags of a region were built
    up to 15 times for 100 points; ~8.5 kB a region kept)."""

    def __init__(self, polytopes, covs, chol=None):
        self.chol, self.ok = factors_and_ok(polytopes, covs, chol, 4)
        self.polytopes = list(polytopes)
        self._shapes: dict = {}
        self._frames: dict = {}
        self._log_volume = np.full(len(self.polytopes), np.nan)
        self._closest: dict = {}

    def cone_shape(self, r):
        """The flags of region ``r`` (``cones.cone_shape``; compiled, ``shape_kernel.cone_shape_checked``, unless
        ``COMPILED_FLAGS`` is False), built once from the region whitened about its vertices' centroid (a translation
        fixed by the region, not by the points asking: the flags' numbers depend on the unit normals and rays only,
        their combinatorics on incidences that any translation gives alike); None where they cannot be built
        (``cones_first`` then tries per call and falls back)."""
        if r not in self._shapes:
            p = self.polytopes[r]
            Nrm, D, Yv, Yr = whitened(p, self.chol[r], p.vertices.mean(axis=0)[None])
            build = cone_shape_checked if COMPILED_FLAGS else _cone_shape
            try:
                self._shapes[r] = build(Nrm, D[0], Yv[0], Yr)
            except np.linalg.LinAlgError:
                self._shapes[r] = None
        return self._shapes[r]

    def whitened(self, r, means):
        """:func:`whitened` of region ``r`` at ``means`` (M, 4), with the parts that depend on the region only (unit
        normals, their norms, ``L^-1``, unit rays) kept: the same expressions, the same bits."""
        if r not in self._frames:
            p, chol = self.polytopes[r], self.chol[r]
            HL = p.H @ chol
            nrm = np.linalg.norm(HL, axis=1)
            Linv = np.linalg.inv(chol)
            Yr = p.rays @ Linv.T if p.rays.size else np.zeros((0, 4))
            if Yr.size:
                Yr = Yr / np.linalg.norm(Yr, axis=1)[:, None]
            self._frames[r] = (HL / nrm[:, None], nrm, Linv, Yr)
        Nrm, nrm, Linv, Yr = self._frames[r]
        p = self.polytopes[r]
        D = (p.c[None, :] - means @ p.H.T) / nrm
        Yv = (p.vertices[None] - means[:, None, :]) @ Linv.T
        return Nrm, D, Yv, Yr

    def keep_closest(self, r, rows, means, D, log_b):
        """Keep ``budget.pair_bounds``' log mass bounds ``log_b`` (M,) of region ``r`` at the points ``rows``
        (ascending), with the fingerprints (:func:`_fingerprints`) of their means (M, 4) and whitened offsets ``D``
        (M, F), for :func:`_region_cones` of the same ``evaluate`` block (:meth:`kept_closest`; 24 bytes a pair);
        :meth:`drop_closest` frees them."""
        self._closest.setdefault(r, []).append((rows.astype(np.int32), _fingerprints(means, D), log_b))

    def kept_closest(self, r, rows, means, D):
        """The kept log bounds (M,) of region ``r`` at the points ``rows`` whose means (M, 4) and offsets ``D`` (M, F)
        have the kept fingerprints, and (M,) which rows were kept (the others: NaN). The bound of a row depends on its
        ``D`` and its vertices (which follow from its mean alone) only; ``D`` is checked because numpy's ``means @
        H.T`` goes through BLAS gemv for one row and gemm for more, whose last bits can differ."""
        M = rows.size
        log_b, hit = np.full(M, np.nan), np.zeros(M, dtype=bool)
        kept = self._closest.get(r, ())
        if not kept:
            return log_b, hit
        fp = _fingerprints(means, D)
        for krows, kfp, kb in kept:
            pos = np.minimum(np.searchsorted(krows, rows), krows.size - 1)
            h = ~hit & (krows[pos] == rows) & (kfp[pos] == fp)
            log_b[h] = kb[pos[h]]
            hit |= h
        return log_b, hit

    def drop_closest(self):
        """Forget the kept closest points (:meth:`keep_closest`)."""
        self._closest = {}

    def log_volumes(self, regions):
        """(len(regions),) log of the whitened volume of each region (``budget.log_volume``: +inf where unbounded or
        not resolved), computed once per region."""
        from .budget import log_volume

        regions = np.asarray(regions, dtype=np.intp)
        for r in regions[np.isnan(self._log_volume[regions])].tolist():
            self._log_volume[r] = log_volume(self.polytopes[r], self.chol[r])
        return self._log_volume[regions]


def pair_tolerances(log_weight_scale, log_upper):
    """Per pair: (skip, tol). ``log_weight_scale``: the caller's bound ``w <= exp(lws) * mass`` (None: none);
    ``log_upper``: the closest-point bound on the log mass. Pairs whose weight is provably below
    ``e^-NEGLIGIBLE_NATS`` are skipped (``engine.evaluate``'s pruning convention); others aim at
    ``DEFAULT_TOL * LOOSEN_WEIGHT / w`` (at least ``DEFAULT_TOL``, at most ``MAX_TOL``)."""
    if log_weight_scale is None:
        return np.zeros(log_upper.size, dtype=bool), np.full(log_upper.size, DEFAULT_TOL)
    wb = log_weight_scale + log_upper
    with np.errstate(over="ignore", invalid="ignore"):
        loosen = np.clip(LOOSEN_WEIGHT * np.exp(-wb), 1.0, MAX_TOL / DEFAULT_TOL)
    return wb < -NEGLIGIBLE_NATS, np.where(np.isfinite(loosen), loosen, 1.0) * DEFAULT_TOL


def with_fallback(Nrm, D, Yv, Yr, *, moments, tol, accuracy, closest, rng, **slicing):
    """:func:`sliced_moments` (``slicing``: its ``direction``), with the RQMC estimate (``qmc.rqmc_moments``) for the
    rows whose bar exceeds ``FALLBACK_REL``, kept where its own bar is smaller. Returns ``(log_mass, mean, cov, rel,
    used_rqmc)``; ``bounds`` (M, 2), optional: filled with the moments' whitened bounds (:func:`moment_error_bounds`;
    ``inf`` for the RQMC rows)."""
    bounds = slicing.pop("bounds", None)
    lm, my, cy, rel, eb = bounded_sliced_moments(Nrm, D, Yv, Yr, moments=moments, tol=tol, accuracy=accuracy,
                                                 closest=closest, **slicing)
    if moments >= 1:
        _finer_moments(Nrm, (D, Yv, Yr), (lm, my, cy, rel, eb), tol, (moments, accuracy, closest), slicing)
    bad = ~(rel <= FALLBACK_REL)
    if bounds is not None:
        bounds[:] = np.where(bad[:, None], np.inf, eb)
    used = np.zeros(lm.size, dtype=bool)
    if np.any(bad):
        l2, m2, c2, r2 = rqmc_moments(Nrm, D[bad], moments=moments, rng=rng,
                                      relative=accuracy == "relative")
        better = r2 < np.where(np.isnan(rel[bad]), np.inf, rel[bad])
        idx = np.nonzero(bad)[0][better]
        lm[idx], rel[idx], used[idx] = l2[better], r2[better], True
        if moments >= 1:
            my[idx] = m2[better]
        if moments >= 2:
            cy[idx] = c2[better]
    return lm, my, cy, rel, used


FINER_MOMENTS = 1e-2  # the slices' second pass for pairs whose moment bounds miss the contract: tol times this
FINER_GAIN = 0.5  # ... replaces the first's moments where it halves both bounds (else the first's bits stay: on
# [4, 8, 8, 5] x 20 two pairs miss the absolute contract, 1.2e-8 against 8e-9, and the pass moved them by 1 %)


def moments_certified(out, tol, moments, accuracy):
    """(M,) the rows of ``out = (lm, mean, cov, rel, eb)`` (:func:`bounded_sliced_moments`) whose moment
    bounds ``eb`` meet the cones' contract (``cones.certified``: ``MEAN_TOL`` / ``COV_TOL`` of the smallest
    eigenvalue (``accuracy="relative"``) or of the whitened unit, loosened for light pairs by ``tol / 1e-10``);
    empty pairs (mass 0) have nothing to bound."""
    from .cones import certified

    lm, mean, cov, _, eb = out
    M = lm.size
    c = np.zeros((M, 4, 4)) if cov is None else cov
    ok = certified((np.where(np.isfinite(lm), lm, 0.0), mean, c, np.zeros(M), eb, np.zeros(M, dtype=bool)),
                   np.broadcast_to(tol, (M,)), moments, accuracy)
    return ok | ~np.isfinite(lm)


def _finer_moments(Nrm, arrays, out, tol, how, slicing):
    """Pairs of :func:`with_fallback` whose moment bounds miss the contract (:func:`moments_certified`) get a second
    pass at ``FINER_MOMENTS`` of their tolerance; its moments and their bounds replace the first where both bounds
    are at most ``FINER_GAIN`` of the first's (the mass and its bar stay the first pass's: ``evaluate``'s log p does
    not move). ``out = (lm, my,
    cy, rel, eb)`` is updated in place; ``how = (moments, accuracy, closest)``. What still misses keeps the smaller
    bounds: on rotated needles 1e-4 wide the bound is the input conditioning's (the vertices ~1e-15 off the planes
    move the mass by ~1e-10, the mean by up to that times the diameter), far above ``MEAN_TOL`` of a 3e-5 spread,
    and no float64 covariance of a needle with eigenvalues 1e-9 and 0.1 is within ``COV_TOL`` of the smaller."""
    D, Yv, Yr = arrays
    lm, my, cy, rel, eb = out
    moments, accuracy, closest = how
    tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), lm.shape)
    idx = np.nonzero(~moments_certified(out, tol, moments, accuracy) & (rel <= FALLBACK_REL))[0]
    if not idx.size:
        return
    _, m2, c2, _, e2 = bounded_sliced_moments(Nrm, D[idx], Yv[idx], Yr, moments=moments,
                                              tol=tol[idx] * FINER_MOMENTS, accuracy=accuracy,
                                              closest=np.asarray(closest)[idx], **slicing)
    better = (e2 <= FINER_GAIN * eb[idx]).all(axis=1)
    sel = idx[better]
    eb[sel], my[sel] = e2[better], m2[better]
    if moments >= 2:
        cy[sel] = c2[better]


def _shape_of(geo, r):
    """Region r's cached cone flags (:meth:`SlicedGeometry.cone_shape`), or None for a geometry without the cache."""
    return geo.cone_shape(r) if hasattr(geo, "cone_shape") else None


FLAGGED_BUDGET = 2e-9  # pairs the cones do not settle are skipped, lightest bound first per region, while the point's
# sum of their bounds stays within this share of the lower bound of p(x) (the slices cost 10-25 ms a pair)


def _deferred(Nrm, D, Yv, Yr, **kw):
    """``cones_first``'s fallback in :func:`sliced_batch`: marks the rows the cones leave (NaN mass) for
    :func:`_settle_deferred` to skip or slice."""
    M = D.shape[0]
    return np.full(M, np.nan), np.zeros((M, 4)), np.zeros((M, 4, 4)), np.full(M, np.nan), np.zeros(M, dtype=bool)


def _mass_bounds(closest, Yv, Yr, log_vol):
    """(M,) ``budget.log_mass_bounds`` of the pairs (certified distance from ``closest``, whitened log volume)."""
    from .budget import certified_distance, log_mass_bounds

    return log_mass_bounds(certified_distance(closest, Yv, Yr), log_vol)


def _closest_bounds(Nrm, D, Yv, Yr, log_vol):
    """(M, 4) closest points and (M,) ``budget.log_mass_bounds`` (certified distance, whitened log volume), compiled
    (``budget.closest_and_distance``)."""
    from .budget import closest_and_distance, log_mass_bounds

    c = np.ascontiguousarray
    y, d = closest_and_distance(c(Nrm), c(D), c(Yv), c(Yr, dtype=np.float64).reshape(-1, 4))
    return y, log_mass_bounds(d, log_vol)


_FINGERPRINT_KEYS = np.random.default_rng(20261207).integers(0, 2 ** 63, size=512, dtype=np.uint64) * np.uint64(2) + \
    np.uint64(1)  # fixed odd 64-bit multipliers for _fingerprints (a generator per call cost ~0.1 ms)


def _fingerprint_keys(n):
    """(n,) the first ``n`` of the fixed odd multipliers (more drawn from the same seed where n > 512)."""
    if n <= _FINGERPRINT_KEYS.size:
        return _FINGERPRINT_KEYS[:n]
    keys = np.random.default_rng(20261207).integers(0, 2 ** 63, size=n, dtype=np.uint64)
    return keys * np.uint64(2) + np.uint64(1)


def _fingerprints(means, D):
    """(M,) ``sum_i bits(x_i) k_i mod 2^64`` over each row ``x`` of ``[means, D]`` (the float64 bit patterns, odd
    keys ``k``): rows that differ in one entry always differ here (``k_i`` is invertible mod 2^64); rows that differ
    in several collide with probability ~2^-64."""
    X = np.ascontiguousarray(np.concatenate([means, D], axis=1), dtype=np.float64)
    return (X.view(np.uint64) * _fingerprint_keys(X.shape[1])[None]).sum(axis=1, dtype=np.uint64)


def _closest_only(args):
    """(M, 4) closest points of the rows ``args = (Nrm, D, Yv, Yr)`` (``budget.closest_and_distance``, row by row)."""
    return _closest_bounds(*args, np.inf)[0]


def _kept_closest_bounds(geo, r, rows, means, args):
    """:func:`_closest_bounds` of region ``r``'s pairs at the points ``rows`` (means ``means``, whitened ``args =
    (Nrm, D, Yv, Yr)``): the bounds ``budget.pair_bounds`` computed for this block taken from ``geo``
    (:meth:`SlicedGeometry.kept_closest`: the same compiled call on the same bits, row by row), the rest computed.
    Returns the closest points (NaN rows where the bound was kept: :func:`_region_cones` computes those the cones
    leave), the bounds and (M,) which were kept."""
    Nrm, D, Yv, Yr = args
    log_b, hit = geo.kept_closest(r, rows, means, D)
    closest = np.full((rows.size, 4), np.nan)
    if not hit.all():
        miss = np.nonzero(~hit)[0]
        closest[miss], log_b[miss] = _closest_bounds(Nrm, D[miss], Yv[miss], Yr, geo.log_volumes([r])[0])
    return closest, log_b, hit


class Settled(NamedTuple):
    """:func:`_settle_deferred`'s rows (M of them): skipped rows have mass -inf and error 0."""

    log_mass: np.ndarray  # (M,)
    mean: np.ndarray  # (M, 4) whitened conditional means
    cov: np.ndarray  # (M, 4, 4) whitened conditional covariances
    rel: np.ndarray  # (M,) relative mass errors
    skip: np.ndarray  # (M,) bool: skipped within FLAGGED_BUDGET
    moment_bounds: np.ndarray  # (M, 2) whitened mean / covariance bounds
    log_bounds: np.ndarray  # (M,) log mass upper bounds (the skipped rows' caps)


class RegionCones(NamedTuple):
    """:func:`_region_cones`'s result for the K rows of one region it keeps."""

    rows: np.ndarray  # (K,) point indices
    lws: np.ndarray | None  # (K,) log weight scales (None: no weights)
    kw: dict  # the rows' ``with_fallback`` keywords
    log_mass: np.ndarray  # (K,) NaN where the cones left the row
    mean: np.ndarray | None
    cov: np.ndarray | None
    rel: np.ndarray
    leftover: tuple | None  # (indices the cones left, their (Nrm, D, Yv, Yr)) for _settle_deferred
    moment_bounds: np.ndarray  # (K, 2) whitened moment bounds


def _settle_deferred(args, kw, lws, log_vol, spent):
    """The pairs ``cones_first`` left (``args = (Nrm, D, Yv, Yr)`` of those rows, ``kw`` their ``with_fallback``
    keywords, ``lws`` their log weight scales): each is skipped, in the order of its bound, while the point's
    ``spent`` (N-indexed through ``kw["rows"]``; log of the summed relative bounds, updated in place) stays within
    ``FLAGGED_BUDGET``; the rest go to :func:`with_fallback`. The bound of a pair is ``lws`` plus
    ``budget.log_mass_bounds`` (certified distance, region volume ``log_vol``). Returns the rows' :class:`Settled`."""
    Nrm, D, Yv, Yr = args
    rows = kw.pop("rows")
    M = D.shape[0]
    log_b = _mass_bounds(kw["closest"], Yv, Yr, log_vol)
    bound = lws + log_b
    skip = np.zeros(M, dtype=bool)
    for m in np.argsort(bound, kind="stable").tolist():
        total = np.logaddexp(spent[rows[m]], bound[m])
        if total <= np.log(FLAGGED_BUDGET):
            skip[m], spent[rows[m]] = True, total
    lm, my, cy, rel = np.full(M, -np.inf), np.zeros((M, 4)), np.zeros((M, 4, 4)), np.zeros(M)
    eb = np.zeros((M, 2))
    go = np.nonzero(~skip)[0]
    if go.size:
        sub = {**kw, "tol": kw["tol"][go], "closest": kw["closest"][go], "bounds": np.full((go.size, 2), np.inf)}
        lm[go], mg, cg, rel[go], _ = with_fallback(Nrm, D[go], Yv[go], Yr, **sub)
        eb[go] = sub["bounds"]
        if mg is not None:
            my[go] = mg
        if cg is not None:
            cy[go] = cg
    return Settled(lm, my, cy, rel, skip, eb, log_b)


REGIONS_PER_ROUND = 512  # regions whose cones run together in worker threads before their results are filed


def _region_cones(req, geo, pr_all, pn_all, r, budget):
    """Region r's pairs in :func:`sliced_batch` up to the cones: ``None`` when every pair is negligible, else the
    :class:`RegionCones` of the rows kept. Reads ``geo``'s per-region caches for r only (flags, volume), so
    regions can run in separate threads."""
    lo, hi = np.searchsorted(pr_all, [r, r + 1])  # pr_all ascending (np.nonzero of (R, N)): pn_all[pr_all == r]
    rows = pn_all[lo:hi]
    if budget:  # the volume bound too (slivers: ~20 nats below Q(|y*|)), so light slivers get loose tolerances
        Nrm, D, Yv, Yr = geo.whitened(r, req.means[r, rows])
        closest, log_upper, kept = _kept_closest_bounds(geo, r, rows, req.means[r, rows], (Nrm, D, Yv, Yr))
    else:
        Nrm, D, Yv, Yr = whitened(req.polytopes[r], geo.chol[r], req.means[r, rows])
        closest, log_upper = closest_distance(Nrm, D)
        kept = np.zeros(rows.size, dtype=bool)
    lws = req.weight_scale(np.full(rows.size, r), rows)
    skip, tol = pair_tolerances(lws, log_upper)
    go = ~skip
    if not np.any(go):
        return None
    kw = dict(moments=req.moments, tol=tol[go], accuracy=req.accuracy, closest=closest[go], rng=req.rng)
    eb = np.full((int(go.sum()), 2), np.inf)
    lm, my, cy, rel, _ = cones_first(_deferred if budget else with_fallback, Nrm, D[go], Yv[go], Yr,
                                     shape=_shape_of(geo, r), bounds=eb,
                                     log_weight_scale=None if lws is None else lws[go], **kw)  # issue 14: cones first
    left = np.nonzero(np.isnan(lm))[0] if budget else np.zeros(0, dtype=np.intp)
    if left.size and kept[go][left].any():  # the closest points of the rows the cones leave (kept: only the bound)
        need = left[kept[go][left]]
        kw["closest"][need] = _closest_only((Nrm, D[go][need], Yv[go][need], Yr))
    leftover = (left, (Nrm, D[go][left], Yv[go][left], Yr)) if left.size else None
    return RegionCones(rows[go], None if lws is None else lws[go], kw, lm, my, cy, rel, leftover, eb)


def _file_region(req, geo, res, store, r, out, spent):
    """:func:`sliced_batch`'s filing of region r's results ``out`` (:func:`_region_cones`): the pairs the cones left
    skipped or sliced by :func:`_settle_deferred` (in region order: ``spent`` accumulates; the skipped pairs' mass
    bounds into ``res.cap``), then ``store`` (with the moments' whitened bounds)."""
    rows, lws, kw, lm, my, cy, rel, leftover, eb = out
    if leftover is not None:
        left, (Nrm, D, Yv, Yr) = leftover
        sub = {**kw, "tol": kw["tol"][left], "closest": kw["closest"][left], "rows": rows[left]}
        settled = _settle_deferred((Nrm, D, Yv, Yr), sub, lws[left], geo.log_volumes([r])[0], spent)
        lm[left], rel[left], eb[left] = settled.log_mass, settled.rel, settled.moment_bounds
        if settled.skip.any():
            res.cap(r, rows[left][settled.skip], settled.log_bounds[settled.skip])
        if my is not None:
            my[left] = settled.mean
        if cy is not None:
            cy[left] = settled.cov
    store(res, req, geo.chol[r], r, rows, lm, my, cy, rel, eb=eb)


def sliced_batch(req, geo, res, store):
    """S = 4, ``method="auto"``: every needed (region, point) pair of the regular regions by the cones first
    (``cones.cones_first``), then :func:`sliced_moments` (vectorised over the points of a region) for the pairs they
    leave, pairs of provably negligible weight skipped, tolerances loosened by weight (:func:`pair_tolerances`);
    with weights (``req.log_weight_scale``), pairs the cones leave are skipped within ``FLAGGED_BUDGET``
    (:func:`_settle_deferred`; ``res.skipped``: (N,) log of their summed bounds relative to the weight scale's
    lower bound of p(x), -inf: none). ``store(res, req, chol, r, rows, lm, mean, cov, rel)`` files whitened
    results. Returns the regions left to the per-region path.

    With weights, the cones of ``REGIONS_PER_ROUND`` regions at a time run in worker threads (each region alone: the
    compiled passes release the GIL), and their results are filed in region order, so the bits do not depend on the
    thread count; without weights the pairs the cones leave are sliced at once (``with_fallback``, which may draw
    from ``req.rng``), region by region in this thread."""
    pr_all, pn_all = np.nonzero(req.need & geo.ok[:, None])
    spent = np.full(req.shape[1], -np.inf)
    budget = req.log_weight_scale is not None and hasattr(geo, "log_volumes")
    regions = np.unique(pr_all).tolist()

    def cones_of(r):
        return _region_cones(req, geo, pr_all, pn_all, r, budget)

    for start in range(0, len(regions), REGIONS_PER_ROUND):
        chunk = regions[start:start + REGIONS_PER_ROUND]
        outs = map_regions(cones_of, chunk) if budget else [cones_of(r) for r in chunk]
        for r, out in zip(chunk, outs, strict=True):
            if out is not None:
                _file_region(req, geo, res, store, r, out, spent)
    if budget:
        res.skipped = spent
        geo.drop_closest()
    res.has_error[geo.ok] = True
    for r in np.nonzero(geo.ok)[0]:
        res.methods[r] = "sliced"
    return ~geo.ok
