"""Test oracles: S = 1 p(x), posterior mean and variance by mpmath quadrature of the raw model; truncated normals
on boxes (:func:`truncnorm_axes`, the closed form of rotated boxes at any S).

The integrand is log N(x; g(z), Sigma_x) + log N(z; 0, Sigma_z) with g the network's forward pass, so
nothing of the engine's closed forms is used; the quadrature is split at the network's kinks and at
the integrand's maximum, and shifted by that maximum in log space so that points far off the
manifold (log p(x) of -1e4) integrate as well as typical ones.
"""

import mpmath as mp
import numpy as np


def s1_quadrature(net, x, kinks, dps=30):
    """Return (log p(x), E[z|x], Var[z|x]) with mpmath at ``dps`` digits."""
    with mp.workdps(dps):
        diagonal = np.count_nonzero(net.cov_x - np.diag(np.diag(net.cov_x))) == 0
        prec_x = mp.matrix(np.linalg.inv(net.cov_x).tolist())
        prec_diag = [1 / mp.mpf(v) for v in np.diag(net.cov_x)]
        _, logdet_x = np.linalg.slogdet(net.cov_x)
        var_z = mp.mpf(net.cov_z[0, 0])
        D = net.data_dim
        const = -mp.mpf(D + 1) / 2 * mp.log(2 * mp.pi) - mp.mpf(logdet_x) / 2 - mp.log(var_z) / 2
        xm = [mp.mpf(v) for v in x]

        def log_joint(z):
            g = net.forward(np.array([[float(z)]]))[0]
            r = [xm[i] - mp.mpf(g[i]) for i in range(D)]
            if diagonal:
                quad = mp.fsum(ri * ri * pi for ri, pi in zip(r, prec_diag))
            else:
                rv = mp.matrix(r)
                quad = (rv.T * prec_x * rv)[0]
            return const - quad / 2 - z * z / (2 * var_z)

        # locate the integrand's maximum on a float64 grid, then shift by it in log space
        grid = np.concatenate([np.linspace(-12, 12, 4801), np.asarray(kinks, float)])
        resid = x[None, :] - net.forward(grid[:, None])
        prec = np.linalg.inv(net.cov_x)
        rough = -0.5 * np.einsum("nd,de,ne->n", resid, prec, resid) - grid**2 / (2 * net.cov_z[0, 0])
        z_peak = grid[int(np.argmax(rough))]
        shift = log_joint(mp.mpf(z_peak))
        pts = sorted({float(k) for k in kinks} | {float(z_peak)})
        split = [mp.ninf] + [mp.mpf(p) for p in pts] + [mp.inf]

        def moment(k):
            return mp.quad(lambda z: mp.exp(log_joint(z) - shift) * z**k, split)

        m0, m1, m2 = moment(0), moment(1), moment(2)
        mean = m1 / m0
        return float(shift + mp.log(m0)), float(mean), float(m2 / m0 - mean * mean)


def kinks_of(partition):
    ends = {e for r in partition for e in r.polytope.interval()}
    return sorted(e for e in ends if np.isfinite(e))


def _mp_end(t):
    """A float interval end as an mpf (infinite ends as mpmath's infinities)."""
    return mp.mpf(float(t)) if np.isfinite(t) else (mp.inf if t > 0 else -mp.inf)


def truncnorm_axes(lo, hi, dps=40):
    """Per axis of a box: N(0, 1) on [lo_i, hi_i] at ``dps`` digits (of the float ends; either end may be infinite):
    the box's log mass (an mpf, the sum over axes), and each axis's mean and variance (float arrays). An interval
    above 0 takes the upper tails ``Q(lo) - Q(hi)``, others ``Phi(hi) - Phi(lo)`` (the sign-flipped form: no
    difference of two numbers near 1 on either side). A rotated box Q [lo, hi] of N(0, I) has that mass, mean Q m
    and covariance Q diag(v) Q^T."""
    with mp.workdps(dps):
        lm, m, v = mp.mpf(0), [], []
        for a, b in zip(lo, hi):
            a, b = _mp_end(a), _mp_end(b)
            z = mp.ncdf(-a) - mp.ncdf(-b) if a > 0 else mp.ncdf(b) - mp.ncdf(a)
            pa, pb = (mp.npdf(t) if mp.isfinite(t) else mp.mpf(0) for t in (a, b))
            apa, bpb = (t * p if mp.isfinite(t) else mp.mpf(0) for t, p in ((a, pa), (b, pb)))
            mean = (pa - pb) / z
            lm += mp.log(z)
            m.append(mean)
            v.append(1 + (apa - bpb) / z - mean * mean)
        return lm, np.array([float(x) for x in m]), np.array([float(x) for x in v])
