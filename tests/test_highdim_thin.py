"""The thin-region mass bound (``engine.gaussian.highdim.thin``, issue 14): a rigorous upper bound of a region's
standard normal mass from a box in a rotated basis, tight for thin regions.

Oracles independent of the code under test: mpmath's ``ncdf`` differences at 40 digits (one interval); rotated 6-D
and 5-D boxes (products of ``log_ndtr`` differences, bounded and unbounded); rotated products of a thin polygon
(mpmath quadrature) and a thin 4-D box (closed form); Monte Carlo with a stated false-fail probability. Every case
checks that the bound lies above the truth, and the thin ones that it is tight.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from _quadrature_oracle import truncnorm_axes
from scipy.special import log_ndtr
from test_highdim_cones import _mp_polygon_log_mass
from test_highdim_sliced import _box

import engine.distributions as Dm
from engine.gaussian.highdim import whitened
from engine.gaussian.highdim.cones6 import cone6_log_mass
from engine.gaussian.highdim.sliced import closest_distance
from engine.gaussian.highdim.thin import log_interval_upper, log_mass_bound, whitened_log_bound
from engine.polytope import Polytope

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in power")  # truncnorm's skew in _box

INTERVALS = [(-1.0, 2.0), (0.3, 0.3 + 1e-12), (-1e-9, 1e-9), (5.0, 5.0 + 1e-7), (-40.0, -39.9999), (37.0, 37.5),
             (-np.inf, -30.0), (2.0, np.inf), (-np.inf, np.inf), (-8.0, 8.0), (1e-3, 2e-3), (-0.7, -0.2),
             (-3.0, 1e-300), (0.0, 1e-14), (12.0, 12.0 + 1e-3), (-np.inf, 0.1)]


def _mp_interval(a, b):
    return float(truncnorm_axes([a], [b])[0])


def test_interval_bound_above_mpmath_and_tight():
    """``log_interval_upper`` is at or above mpmath's ``log(Phi(b) - Phi(a))`` and within 1e-9 of it (measured
    <= 7.1e-10 nats, at [-40, -39.9999]; widths from 1e-300 to infinite, tails to e^-700)."""
    a, b = np.array(INTERVALS).T
    got = log_interval_upper(a, b)
    for x, y, g in zip(a, b, got):
        want = _mp_interval(x, y)
        assert g >= want, (x, y, g, want)
        assert g - want <= 1e-9 * (1.0 + abs(want)), (x, y, g, want)
    assert np.all(log_interval_upper(np.array([1.0, np.inf]), np.array([1.0, np.inf])) == -np.inf)


THIN6 = [  # (a, b): thin boxes (bounded, one infinite side: one ray) and their masses
    (np.array([-0.01, -1e-4, 0.3, -2.0, -1e-6, 0.5]), np.array([0.02, 2e-4, 0.31, 1.0, 1e-6, 0.5001])),  # e^-43.5
    (np.array([-0.01, -1e-4, 0.3, -2.0, -1e-6, -np.inf]), np.array([0.02, 2e-4, 0.31, 1.0, 1e-6, 0.5001])),
    (np.array([-0.01, -1e-4, 0.3, -2.0, -1e-6, 2.0]), np.array([0.02, 2e-4, 0.31, 1.0, 1e-6, np.inf])),
    (np.array([1.0, -1e-5, 3.0, -1e-3, -1e-6, -0.2]), np.array([1.0 + 1e-8, 1e-5, 3.001, 1e-3, 1e-6, 0.9])),
]
WIDE6 = [  # not thin (bounds loose, still above): bounded, two and five rays
    (np.array([-1.0, -0.5, 0.2, -2.0, -0.7, -1.2]), np.array([0.7, 1.5, 2.0, 0.1, 1.1, 0.9])),
    (np.array([-np.inf, -1e-4, 0.3, -2.0, -1e-6, 2.0]), np.array([0.02, 2e-4, 0.31, 1.0, 1e-6, np.inf])),
    (np.array([9.0, -np.inf, -1.0, -np.inf, 0.3, -0.5]), np.array([np.inf, 0.5, np.inf, 2.0, 1.2, np.inf])),
]


@pytest.mark.parametrize("a, b", THIN6)
def test_thin_rotated_6d_boxes_tight(a, b):
    """A rotated thin 6-D box: the bound is at or above its closed-form mass and within 1e-7 nats of it (measured
    <= 2.2e-9: the vertices' principal axes are the box's own)."""
    _, _, V, R, exact, _, _ = _box(a, b, 3)
    got = whitened_log_bound(V[None], R)[0]
    assert exact <= got <= exact + 1e-7, (got, exact)


@pytest.mark.parametrize("a, b", WIDE6)
def test_wide_rotated_6d_boxes_above(a, b):
    _, _, V, R, exact, _, _ = _box(a, b, 4)
    assert whitened_log_bound(V[None], R)[0] >= exact


def test_thin_rotated_5d_boxes_several_means():
    """S = 5 (the bound is applied there too), one region under several means (a shifted box): each bound at or
    above the closed form and within 1e-7 of it."""
    a, b = np.array([-0.01, -1e-4, 0.3, -2.0, -1e-6]), np.array([0.02, 2e-4, 0.31, 1.0, 1e-6])
    _, _, V, R, _, _, _ = _box(a, b, 7)
    Q = np.linalg.qr(np.random.default_rng(7).standard_normal((5, 5)))[0]
    shifts = np.array([[0.0] * 5, [0.5, 0.0, -0.3, 0.2, 0.01], [-2.0, 1.0, 0.0, 0.0, 0.0]])
    got = whitened_log_bound(V[None] - (shifts @ Q.T)[:, None], R)
    for s, g in zip(shifts, got):
        _, _, _, _, exact, _, _ = _box(a - s, b - s, 7)
        assert exact <= g <= exact + 1e-7, (s, g, exact)


def test_margins_cover_moved_vertices():
    """Vertices reported up to ``delta`` inside the true ones (the partition's rounding) and the ray ``eps_r`` off
    in angle: the bound from the reported ones with those margins stays above the true box's mass, and without them
    falls below it."""
    a, b = np.array([-0.01, -1e-4, 0.3, -2.0, -1e-6, 2.0]), np.array([0.02, 2e-4, 0.31, 1.0, 1e-6, np.inf])
    _, _, _, R, exact, _, _ = _box(a, b, 3)
    shrink = 1e-8  # per finite side: each vertex moves by shrink sqrt(6)
    _, _, Vm, _, _, _, _ = _box(a + shrink, np.where(np.isfinite(b), b - shrink, b), 3)
    eps_r = 1e-10
    tilt = np.random.default_rng(0).standard_normal(6)
    tilt -= (tilt @ R[0]) * R[0]
    Rm = R + eps_r * tilt / np.linalg.norm(tilt)
    Rm /= np.linalg.norm(Rm, axis=1)[:, None]
    got = whitened_log_bound(Vm[None], Rm, shrink * math.sqrt(6.0), eps_r)[0]
    assert exact <= got <= exact + 0.1, (got, exact)  # the 2e-6 wide side grows by 2 delta + 2 M eps_r
    assert whitened_log_bound(Vm[None], Rm)[0] < exact


def _product_region(seed, widths):
    """A thin polygon (the unit-circle polygon of ``test_highdim_cones`` shrunk along one axis) times a 4-D box
    ``[lo, lo + widths]``, rotated in R^6: vertices, rays (none) and its log mass (mpmath x closed form)."""
    rng = np.random.default_rng(seed)
    k = 3 + seed % 3
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    V2 = np.column_stack([0.5 + np.cos(ang), -0.3 + 1e-4 * np.sin(ang)])
    E = np.roll(V2, -1, axis=0) - V2
    N2 = np.column_stack([E[:, 1], -E[:, 0]])
    N2 /= np.linalg.norm(N2, axis=1)[:, None]
    poly = float(_mp_polygon_log_mass(N2, np.einsum("ij,ij->i", N2, V2), V2, np.zeros((0, 2))))
    lo = rng.uniform(-1.5, 1.5, 4)
    hi = lo + widths
    box = float(truncnorm_axes(lo, hi)[0])
    corners = np.array(list(itertools.product(*zip(lo, hi))))
    V = np.array([np.concatenate([v, c]) for v in V2 for c in corners])
    Q = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    return V @ Q.T, poly + box


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_thin_polygon_times_box_above_mpmath(seed):
    """A thin polygon times a thin 4-box, rotated: the bound is at or above the mpmath x closed-form mass, and
    within log 4 of it (the polygon in its bounding rectangle: measured <= 0.9 nats)."""
    V, exact = _product_region(seed, np.array([1e-3, 2e-5, 0.4, 1e-6]))
    got = whitened_log_bound(V[None], np.zeros((0, 6)))[0]
    assert exact <= got <= exact + math.log(4.0), (got, exact)


def _simplex(rng, thinness, ray):
    """A 6-D simplex near the origin (7 vertices), squeezed along 3 random directions by ``thinness``; with ``ray``
    its last vertex is replaced by a ray (6 vertices, 1 ray, 7 facets: the shape that set [6,6,6,6] point 9's bar)."""
    P = rng.standard_normal((7, 6)) * 0.8 + rng.standard_normal(6) * 0.5
    Q = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    scale = np.array([1.0, 1.0, 1.0, thinness, thinness, thinness])
    P = ((P - P.mean(axis=0)) @ Q) * scale @ Q.T + P.mean(axis=0)
    if not ray:
        return P, np.zeros((0, 6))
    r = P[6] - P[:6].mean(axis=0)
    return P[:6], (r / np.linalg.norm(r))[None]


def _mc_mass(V, R, n, rng):
    """Fraction of ``n`` standard normal draws inside conv(V) + cone(R) (membership by the facets of the simplex or
    the unbounded simplex: barycentric coordinates)."""
    y = rng.standard_normal((n, 6))
    if R.shape[0]:
        A = np.vstack([(V[1:] - V[0]), R]).T  # y = V0 + sum_k l_k (V_k - V0) + mu r
        coef = np.linalg.solve(A, (y - V[0]).T).T
        inside = np.all(coef >= 0, axis=1) & (coef[:, :5].sum(axis=1) <= 1.0)
    else:
        A = (V[1:] - V[0]).T
        coef = np.linalg.solve(A, (y - V[0]).T).T
        inside = np.all(coef >= 0, axis=1) & (coef.sum(axis=1) <= 1.0)
    return inside.mean()


@pytest.mark.parametrize("ray", [False, True])
def test_simplices_above_monte_carlo(ray):
    """Random 6-D simplices (bounded, and 6 vertices + 1 ray), not thin: the bound is above the Monte Carlo mass
    (2e5 draws) minus 5 standard errors (one-sided false-fail probability 2.9e-7 per case)."""
    rng = np.random.default_rng(11 if ray else 12)
    for _ in range(4):
        V, R = _simplex(rng, 1.0, ray)
        p = _mc_mass(V, R, 200_000, rng)
        se = math.sqrt(max(p * (1 - p), 1e-12) / 200_000)
        assert math.exp(whitened_log_bound(V[None], R)[0]) >= p - 5 * se



DATA = Path(__file__).parent / "data" / "s6_point9_region812.npz"


def _region812():
    """``random_network([6, 6, 6, 6], rng=0, cov_x=0.1)``, ``X = net.sample(100, rng=1)``, point 9, region 812 (7
    facets, 6 vertices, 1 ray): the pair that alone set that point's bar (1.7e-3) before this bound; its polytope,
    the factor of Sigma_omega, the posterior mean and ``log_norm - log p(x)``."""
    z = np.load(DATA)
    P = Polytope(z["H"], z["c"], z["V"], z["R"], np.zeros((0, 6)))
    return P, z["chol"], z["mu"], float(z["log_norm_minus_logp"])


def _prism_log_mass(Yv, r, n, rng):
    """Standard normal mass of ``conv(Yv) + cone(r)`` when the 6 vertices ``Yv`` span a 5-flat not containing ``r``
    (the region of :func:`_region812`): with ``y = s + t r`` (``s`` in the base simplex, ``t >= 0``; Jacobian
    ``|r . nu|``, ``nu`` the base's unit normal) the mass is ``|r . nu| area(base) E_s[phi_5(s - (s.r) r) Q(s.r)]``,
    ``s`` uniform on the base (Dirichlet(1, ..., 1) weights); the mean by ``n`` draws. Returns the log mass and the
    mean's relative standard error."""
    E = Yv[1:] - Yv[0]
    nu = np.linalg.svd(E)[2][-1]
    area = math.sqrt(abs(np.linalg.det(E @ E.T))) / math.factorial(5)
    s = rng.dirichlet(np.ones(6), n) @ Yv
    h = s @ r
    perp = s - h[:, None] * r
    f = np.exp(-0.5 * np.sum(perp * perp, axis=1) - 2.5 * math.log(2 * math.pi) + log_ndtr(-h))
    return math.log(abs(r @ nu) * area * f.mean()), f.std() / f.mean() / math.sqrt(n)


def test_point9_region812_bound_above_its_mass_and_under_the_budget():
    """The pair of [6,6,6,6] point 9 that no route resolves: its mass (prism formula with Monte Carlo over the base,
    ``_prism_log_mass``; the integrand varies by a few % over the base, relative SE 1.6e-5) lies under the bound
    (bound minus 5 relative SEs: false-fail probability 2.9e-7); the bound is within 10 nats of it (a 5-simplex in
    its box: 5! = 4.8 nats; measured 5.06, mass e^-41.489, bound e^-36.433); and the pair's term cap falls from
    1.7e-3 of p(x) (``Q(|y*|)``) to under 1e-12 (3.1e-17)."""
    P, chol, mu, log_norm = _region812()
    _, _, Yv, Yr = whitened(P, chol, mu[None])
    exact, se = _prism_log_mass(Yv[0], Yr[0], 20_000, np.random.default_rng(1))
    got = log_mass_bound(P, chol, mu[None])[0]
    assert exact + 5 * se <= got <= exact + 10.0, (got, exact, se)
    Nrm, D, _, _ = whitened(P, chol, mu[None])
    assert 1e-3 < math.exp(log_norm + closest_distance(Nrm, D)[1][0]) < 3e-3
    assert math.exp(log_norm + got) < 1e-12


class _OneRegion:
    """A partition of one region, enough for ``distributions._log_term_caps``."""

    def __init__(self, P):
        self.regions = [SimpleNamespace(polytope=P)]

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return self.regions[i]

    def padded_facets(self):
        return self.regions[0].polytope.H[None], self.regions[0].polytope.c[None]


def test_term_caps_take_the_thin_bound_at_s6():
    """``distributions._log_term_caps`` of an unresolved S = 6 pair is its prefactor times the smaller of ``Q(|y*|)``
    and the thin bound (here the latter, 1e-14 times smaller), over p^; a resolved pair keeps the half-space cap."""
    P, chol, mu, log_norm = _region812()
    geo = SimpleNamespace(chol=chol[None], ok=np.array([True]))
    mus = np.stack([mu, mu])[:, None, :]
    st = Dm._FirstPass(_OneRegion(P), mus, (chol @ chol.T)[None], np.full((2, 1), log_norm), np.zeros((2, 1)),
                       None, None, "cones6", np.array([[np.inf], [1e-12]]), None, {"geometry": geo}, False)
    caps = np.exp(Dm._log_term_caps(st))
    want = math.exp(log_norm + log_mass_bound(P, chol, mu[None])[0])
    assert caps[0, 0] == pytest.approx(want, rel=1e-12)
    half = math.exp(log_norm + Dm.log_mass_upper_bound(st.part, mus, st.cov)[1, 0])
    assert caps[1, 0] == pytest.approx(half, rel=1e-12) and caps[1, 0] > 1e10 * caps[0, 0]


def _simplex_facets(V, R):
    """Unit normals and offsets of the simplex ``conv(V)`` (7 vertices) or of ``conv(V) + cone(R)`` (6 vertices, 1
    ray): each facet leaves out one vertex (and, with the ray, contains its direction) or, with the ray, is the
    base through the 6 vertices."""
    N, c = [], []
    for k in range(7):
        idx = [j for j in range(V.shape[0]) if j != k]
        span = np.vstack([V[idx[1:]] - V[idx[0]], R if k < V.shape[0] else np.zeros((0, 6))])
        n = np.linalg.svd(span)[2][-1]
        inside = V[k] - V[idx[0]] if k < V.shape[0] else R[0]
        if n @ inside > 0:
            n = -n
        N.append(n)
        c.append(n @ V[idx[0]])
    return np.array(N), np.array(c)


@pytest.mark.parametrize("seed", [5, 6])
def test_thin_simplices_above_the_cones(seed):
    """Bounded 6-D simplices squeezed along 3 directions (masses e^-18.8, e^-14.9) that ``cones6`` certifies (bars
    1.2e-4, 1.3e-4 at tol 1e-3): the bound lies above the mass plus its bar, within 8 nats (measured 6.5, 5.5: the
    box of a simplex)."""
    V, R = _simplex(np.random.default_rng(seed), 0.2, False)
    N, c = _simplex_facets(V, R)
    lm, rel, flagged = cone6_log_mass(N, c, V, R, tol=1e-3)
    assert not flagged
    got = whitened_log_bound(V[None], R)[0]
    assert lm + math.log1p(rel) <= got <= lm + 8.0, (got, lm, rel)


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_thin_ray_simplices_above_the_prism_formula(seed):
    """6 vertices + 1 ray squeezed along 3 directions by 0.02 (the shape of point 9's region 812; ``cones6`` leaves
    them flagged): the bound lies above the prism formula's mass (``_prism_log_mass``, 5 relative SEs: false-fail
    probability 2.9e-7 per case) and within 8 nats of it (measured 4.6-4.9)."""
    V, R = _simplex(np.random.default_rng(seed), 0.02, True)
    exact, se = _prism_log_mass(V, R[0], 20_000, np.random.default_rng(seed))
    got = whitened_log_bound(V[None], R)[0]
    assert exact + 5 * se <= got <= exact + 8.0, (got, exact, se)


def test_partition_cones_above_their_certified_masses():
    """Real regions with several rays: the 64 simplicial cones (1 vertex, 6 rays) of a ``[6, 6, 6]`` partition
    under the prior. Every one gets a finite bound (the rays' direction from their hull's point closest to the
    origin), and for three of them the bound lies above the mass ``cones6`` certifies plus its bar (wide cones: the
    bound is loose there, 2-6 nats; ``_log_term_caps`` keeps the smaller ``Q(|y*|)``)."""
    import engine
    from engine.partition import partition

    part = partition(engine.random_network([6, 6, 6], rng=1, cov_x=0.1))
    eye, zero = np.eye(6), np.zeros((1, 6))
    bounds = np.array([log_mass_bound(r.polytope, eye, zero)[0] for r in part])
    assert np.all(np.isfinite(bounds))
    for r in (0, 4, 9):
        Nrm, D, Yv, Yr = whitened(part[r].polytope, eye, zero)
        lm, rel, flagged = cone6_log_mass(Nrm, D[0], Yv[0], Yr, tol=1e-3)
        assert not flagged and lm + math.log1p(rel) <= bounds[r], (r, lm, rel, bounds[r])
