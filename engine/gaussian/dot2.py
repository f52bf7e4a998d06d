"""Compensated dot products for the compiled kernels: Dekker's TwoProduct and Knuth's TwoSum, as in Ogita, Rump and
Oishi's Dot2 ("Accurate sum and dot product", SIAM J. Sci. Comput. 2005): the result as if computed in twice the
working precision, then rounded, error ``<= eps |x.y| + gamma_n^2 sum |x_k y_k|``. The kernels use it where facet
normals are nearly orthogonal and a plain dot product of O(1) entries loses every digit of a ~1e-16 result (S = 3,
the S = 4 slices and the S' = 4 cones' edge ends). The operations are written once, as plain functions that run
on numpy arrays (``solid.geometry``'s vectorised geometry) and, compiled, on scalars in the kernels: one
definition, one operation order, the same bits."""

from __future__ import annotations

import numba

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
SPLIT = 134217729.0  # 2^27 + 1: Dekker's splitter for float64


def two_prod_ops(a, b):
    """``(p, e)``, ``p = fl(a b)``, ``a b = p + e`` exactly (Dekker's TwoProduct, no FMA needed). Plain Python on
    scalars or numpy arrays (``solid.geometry``'s array form); :func:`two_prod` is its compiled form."""
    p = a * b
    t = SPLIT * a
    ah = t - (t - a)
    al = a - ah
    t = SPLIT * b
    bh = t - (t - b)
    bl = b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def add_product_ops(p, s, h, r):
    """One step of Dot2: TwoSum of the running sum ``p`` and the product ``h``, its error and ``r`` (the product's
    error) into ``s``. Plain Python on scalars or arrays; :func:`add_product` is its compiled form."""
    q = p + h
    z = q - p
    return q, s + (((p - (q - z)) + (h - z)) + r)


two_prod = _jit(two_prod_ops)
add_product = _jit(add_product_ops)


@_jit
def two_prod_sum(p, s, a, b):
    """``(p, s)`` plus ``a b``: :func:`two_prod` then :func:`add_product`."""
    h, r = two_prod(a, b)
    return add_product(p, s, h, r)


@_jit
def dot2(x, y, n):
    """``sum(x[:n] * y[:n])`` by Dot2."""
    p, s = 0.0, 0.0
    for k in range(n):
        p, s = two_prod_sum(p, s, x[k], y[k])
    return p + s
