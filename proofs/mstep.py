"""M-step stationarity (Sec. 4.2, Appendix G): the gradient of Q vanishes at the closed-form updates.

Q(theta) = sum_n sum_w { -1/2 [ e0 (x_n - b_w)^T P (x_n - b_w) - 2 (x_n - b_w)^T P A_w e1
                               + Tr(A_w^T P A_w E2) ] } + N/2 log det P + const,     P = Sx^-1,
with the posterior moments e0 = e0_{nw}, e1 = e1_{nw}, E2 = E2_{nw} frozen (E-step) and, for layer
updates, the activation masks D_w^i frozen. A_w, b_w follow eq. (2).

Closed-form updates (derived here; '^{i->j}' products as in eq. (8)):
* Bias of layer l. Write b_w = c_w + M_w v^l with M_w = A_w^{l+1->L} D_w^l (M_w = I for l = L) and
  c_w the rest of b_w. With r_{nw} = (x_n - c_w) e0_{nw} - A_w e1_{nw} (expected residual without v^l):
      v^l* = ( sum_n sum_w e0_{nw} M_w^T P M_w )^-1  sum_n sum_w M_w^T P r_{nw}.
  For l = L this is v^L* = (1/N) sum_n sum_w r_{nw}. NOTE: the paper's display omits the weight e0
  in the first sum; as printed it is not stationary (perturbation 'paper_no_e0' FAILS).
* Weights of layer l. Write g(z) = L_w W^l y + t_w on region w, with L_w = A_w^{l+1->L} D_w^l,
  y = R_w z + s_w the input of layer l (R_w = D_w^{l-1} A_w^{1->l-1}, s_w = D_w^{l-1} b_w^{1->l-1};
  R = I, s = 0 for l = 1) and t_w = L_w v^l + sum_{i>l} A_w^{i+1->L} D_w^i v^i. Input moments
  m1 = R e1 + s e0, M2 = R E2 R^T + R e1 s^T + s e1^T R^T + e0 s s^T. Then (vec stacks columns)
      vec(W^l*) = [ sum_n sum_w M2_{nw} (x) L_w^T P L_w ]^-1 vec( sum_n sum_w L_w^T P (x_n - t_w) m1_{nw}^T ),
  and for l = L (L_w = I, t_w = v^L): W^L* = ( sum (x_n - v^L) m1^T ) ( sum M2 )^-1.
* Noise covariance. C = sum_n sum_w [ e0 (x_n - b_w)(x_n - b_w)^T - (x_n - b_w) e1^T A_w^T
  - A_w e1 (x_n - b_w)^T + A_w E2 A_w^T ] = sum_n E[(x_n - g(z))(x_n - g(z))^T].
  Full: Sx* = C / N.  Isotropic Sx = s2 I: s2* = Tr(C) / (N D).  Diagonal: Sx* = diag(C) / N.

Method: a 2-layer net, S = 1, hidden width 2, D = 2, two regions with frozen leaky masks diag(1, eta)
and diag(eta, 1), N = 2 data points, all parameters, data and moments symbolic (sum_w e0_{nw} = 1).
The gradient of Q with respect to the updated block is substituted with the update and shown to vanish
with ``together``/``cancel``. For Sx the derivative of Q(Sx) = sum E[log N(x; A z + b, Sx)] in the
entries of Sx (full, isotropic, diagonal) is evaluated at the update.
"""

from __future__ import annotations

import sympy as sp

from ._core import Residual, Verdict, check_perturb, sym_matrix

EQUATION = "Sec. 4.2 M-step (App. G)"
METHOD = "grad Q at the closed-form update, denominators cleared; sparse expansion / cancel"
PERTURBATIONS = {
    "paper_no_e0": "bias normal matrix without the e0 weights (as printed in Sec. 4.2)",
    "wrong_sign": "r = (x - c) e0 + A e1",
    "sigma_not_inverse": "Sx in place of Sx^-1 in the hidden-bias and hidden-weight updates",
    "missing_factor": "Sx* = C (the 1/N dropped); W^L* without the inverse of sum M2",
}

N_POINTS, H, D, S = 2, 2, 2, 1


def vec(M):
    return sp.Matrix([M[i, j] for j in range(M.cols) for i in range(M.rows)])


def _setup():
    eta = sp.Symbol("eta", real=True)
    masks = [sp.diag(1, eta), sp.diag(eta, 1)]
    W1, v1 = sym_matrix("w", H, S), sym_matrix("v", H, 1)
    W2, v2 = sym_matrix("W", D, H), sym_matrix("V", D, 1)
    P = sym_matrix("P", D, symmetric=True)
    xs = [sym_matrix(f"x{n}", D, 1) for n in range(N_POINTS)]
    mom = []
    for n in range(N_POINTS):
        e0a = sp.Symbol(f"e0_{n}")
        row = []
        for w, e0 in enumerate((e0a, 1 - e0a)):
            row.append((e0, sp.Symbol(f"e1_{n}{w}"), sp.Symbol(f"E2_{n}{w}")))
        mom.append(row)
    return eta, masks, W1, v1, W2, v2, P, xs, mom


def _Q(masks, W1, v1, W2, v2, P, xs, mom):
    q = 0
    for n, x in enumerate(xs):
        for w, Dw in enumerate(masks):
            e0, e1, E2 = mom[n][w]
            A, b = W2 * Dw * W1, v2 + W2 * Dw * v1
            r = x - b
            q += -((e0 * r.T * P * r)[0, 0] - 2 * (r.T * P * A)[0, 0] * e1 + (A.T * P * A)[0, 0] * E2) / 2
    return q


def _grad_at(q, params, update):
    """grad Q at the update, for Q quadratic in ``params`` and update = den^-1 num (given as (num, den)).

    grad = g0 + J p with constant J; at p = den^-1 num, det(den) grad = J adj(den) num + det(den) g0,
    a polynomial: it is returned and must expand to 0 (no division is ever performed)."""
    num, den = update
    grad = sp.Matrix([sp.diff(q, p) for p in params])
    J = grad.jacobian(params)
    g0 = grad.xreplace({p: 0 for p in params})
    if not isinstance(den, sp.MatrixBase):  # update = num / den with a scalar den
        return list(J * num + den * g0)
    return list(J * den.adjugate() * num + den.det() * g0)


def _grad_at_point(q, params, values):
    sub = dict(zip(params, values))
    return [sp.diff(q, p).xreplace(sub) for p in params]


def claim(perturb: str | None = None) -> list[Residual]:
    check_perturb(perturb, PERTURBATIONS)
    eta, masks, W1, v1, W2, v2, P, xs, mom = _setup()
    q = _Q(masks, W1, v1, W2, v2, P, xs, mom)
    Pm = P.inv() if perturb == "sigma_not_inverse" else P
    sgn = 1 if perturb == "wrong_sign" else -1
    out = []

    def pairs():
        for n, x in enumerate(xs):
            for w, Dw in enumerate(masks):
                yield x, Dw, mom[n][w]

    # last-layer bias v2: M = I, c_w = W2 D_w v1
    num, den = sp.zeros(D, 1), sp.zeros(D, D)
    for x, Dw, (e0, e1, _) in pairs():
        A, c = W2 * Dw * W1, W2 * Dw * v1
        num += P * ((x - c) * e0 + sgn * A * e1)
        den += P * (1 if perturb == "paper_no_e0" else e0)
    out.append(Residual("dQ/dv^L at v^L*", _grad_at(q, list(v2), (num, den))))
    # hidden bias v1: M_w = W2 D_w, c_w = v2
    num, den = sp.zeros(H, 1), sp.zeros(H, H)
    for x, Dw, (e0, e1, _) in pairs():
        M, A = W2 * Dw, W2 * Dw * W1
        num += M.T * Pm * ((x - v2) * e0 + sgn * A * e1)
        den += M.T * Pm * M * (1 if perturb == "paper_no_e0" else e0)
    out.append(Residual("dQ/dv^1 at v^1*", _grad_at(q, list(v1), (num, den))))
    # last-layer weights W2: y = D_w (W1 z + v1), R = D_w W1, s = D_w v1, t = v2
    num, den = sp.zeros(D, H), sp.zeros(H, H)
    for x, Dw, (e0, e1, E2) in pairs():
        R, s = Dw * W1, Dw * v1
        m1 = R * e1 + s * e0
        M2 = R * E2 * R.T + R * e1 * s.T + s * e1 * R.T + e0 * s * s.T
        num += (x - v2) * m1.T
        den += M2
    # W^L* = num den^-1 = num adj(den) / det(den)
    upd = (vec(num), 1) if perturb == "missing_factor" else (vec(num * den.adjugate()), den.det())
    out.append(Residual("dQ/dW^L at W^L*", _grad_at(q, list(vec(W2)), upd)))
    # hidden weights W1 (l = 1): L_w = W2 D_w, R = I, s = 0, t_w = v2 + W2 D_w v1, M2 = E2, m1 = e1
    num, den = sp.zeros(H * S, 1), sp.zeros(H * S, H * S)
    for x, Dw, (_e0, e1, E2) in pairs():
        Lw, t = W2 * Dw, v2 + W2 * Dw * v1
        num += vec(Lw.T * Pm * (x - t) * sp.Matrix([[e1]]))
        den += sp.kronecker_product(sp.Matrix([[E2]]), Lw.T * Pm * Lw)
    out.append(Residual("dQ/dW^1 at W^1*", _grad_at(q, list(vec(W1)), (num, den))))
    return out


def claim_noise(perturb: str | None = None) -> list[Residual]:
    """Sx updates; A_w, b_w free symbols (the update does not depend on the network's structure)."""
    check_perturb(perturb, PERTURBATIONS)
    xs = [sym_matrix(f"x{n}", D, 1) for n in range(N_POINTS)]
    regions = [(sym_matrix(f"A{w}", D, S), sym_matrix(f"c{w}", D, 1)) for w in range(2)]
    mom = []
    for n in range(N_POINTS):
        e0a = sp.Symbol(f"e0_{n}")
        mom.append([
            (e0, sp.Symbol(f"e1_{n}{w}"), sp.Symbol(f"E2_{n}{w}"))
            for w, e0 in enumerate((e0a, 1 - e0a))
        ])
    C = sp.zeros(D, D)
    for n, x in enumerate(xs):
        for w, (A, b) in enumerate(regions):
            e0, e1, E2 = mom[n][w]
            r = x - b
            C += e0 * r * r.T - r * e1 * A.T - A * e1 * r.T + A * E2 * A.T
    scale = 1 if perturb == "missing_factor" else sp.Rational(1, N_POINTS)

    def Q(Sx):
        Si = Sx.inv()
        q = -N_POINTS * sp.log(Sx.det()) / 2
        for n, x in enumerate(xs):
            for w, (A, b) in enumerate(regions):
                e0, e1, E2 = mom[n][w]
                r = x - b
                quad = (e0 * r.T * Si * r)[0, 0] - 2 * (r.T * Si * A)[0, 0] * e1
                q += -(quad + (A.T * Si * A)[0, 0] * E2) / 2
        return q

    out = []
    Sf = sym_matrix("S", D, symmetric=True)
    full = C * scale
    out.append(Residual("dQ/dSx at Sx* = C/N", _grad_at_point(Q(Sf), [Sf[0, 0], Sf[0, 1], Sf[1, 1]],
                                                       [full[0, 0], full[0, 1], full[1, 1]])))
    s2 = sp.Symbol("s2", positive=True)
    iso = _grad_at_point(Q(s2 * sp.eye(D)), [s2], [C.trace() * scale / D])
    out.append(Residual("dQ/ds2 at s2* = Tr C/(N D)", iso))
    d = sp.symbols("d1:3", positive=True)
    diag = _grad_at_point(Q(sp.diag(*d)), list(d), [C[0, 0] * scale, C[1, 1] * scale])
    out.append(Residual("dQ/ddiag at diag(C)/N", diag))
    return out


def _is_zero(expr) -> bool:
    """Polynomial residuals: expand in a sparse ring; rational ones (Sx): together/cancel."""
    expr = sp.sympify(expr)
    syms = sorted(expr.free_symbols, key=str)
    if not syms:
        return expr == 0
    num, den = sp.fraction(sp.together(expr)) if not expr.is_polynomial(*syms) else (expr, 1)
    ring, *_ = sp.ring(syms, sp.QQ)
    return ring(num) == 0 if den != 0 else False


def prove(perturb: str | None = None) -> Verdict:
    for res in claim(perturb) + claim_noise(perturb):
        if not all(_is_zero(g) for g in res.lhs):
            return Verdict(False, "FAILED", f"{res.label} is not 0")
    return Verdict(True, "proved", "v^L, v^1, W^L, W^1 (frozen masks), Sx full/isotropic/diagonal")
