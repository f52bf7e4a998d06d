"""Built-in verification cases: small seeded networks covering the paper's settings.

Each case is fixed (its own seeds), so a report depends only on ``--seed`` (which drives the Monte
Carlo draws and random test points z). S = 1 and S = 2 networks, ReLU / leaky-ReLU / absolute value,
diagonal, isotropic and full ``Sigma_x``, a point far off the manifold (log p(x) ~ -10^3, where only
relative accuracy of tiny region masses gives the right answer), linear decoders (PPCA / FA) and a
ReLU network whose relevant latent space is a single region.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.network import Activation, Linear, Network, random_network


@dataclass
class Case:
    name: str
    net: Network
    X: np.ndarray  # (N, D) test points
    tags: set = field(default_factory=set)  # "linear", "one_region", "far"
    description: str = ""

    @property
    def S(self) -> int:
        return self.net.latent_dim


def _points(net: Network, n: int, seed: int, far: np.ndarray | None = None) -> np.ndarray:
    X = net.sample(n, rng=seed)
    return np.vstack([X, far[None]]) if far is not None else X


def _one_region_net() -> Network:
    """ReLU units whose kinks sit at z = -40 and z = 90: all but ~e^-800 of the prior is one region."""
    layers = [
        Linear(np.array([[1.0], [-0.5]]), np.array([40.0, 45.0])),
        Activation("relu", 0.0),
        Linear(np.array([[0.8, 0.3], [-0.4, 0.9], [0.2, -0.6]]), np.array([-30.0, -20.0, 13.0])),
    ]
    return Network(layers=layers, latent_dim=1, cov_z_spec=1.3, cov_x_spec=[0.2, 0.3, 0.25])


def build_cases(profile: str = "quick") -> list[Case]:
    relu1 = random_network([1, 6, 6, 3], "relu", cov_x=[0.2, 0.3, 0.25], rng=11)
    far = relu1.forward(np.zeros((1, 1)))[0] + np.array([25.0, -25.0, 25.0])
    leaky1 = random_network(
        [1, 5, 4, 2], "leaky_relu", negative_slope=0.1, cov_x=[[0.3, 0.1], [0.1, 0.2]], cov_z=0.8, rng=12
    )
    abs1 = random_network([1, 4, 4, 2], "abs", cov_x=0.15, rng=13)
    lin1 = random_network([1, 3], cov_x=0.2, rng=14)
    lin2 = random_network([2, 4], cov_x=[0.1, 0.2, 0.3, 0.15], cov_z=[1.0, 0.5], rng=15)
    relu2 = random_network([2, 5, 3], "relu", cov_x=0.3, rng=16)
    one = _one_region_net()
    cases = [
        Case(
            "relu-S1",
            relu1,
            _points(relu1, 3, 101, far),
            {"far"},
            "[1,6,6,3] ReLU, diagonal cov_x, far point",
        ),
        Case("leaky-S1", leaky1, _points(leaky1, 2, 102), set(), "[1,5,4,2] leaky-ReLU, full cov_x"),
        Case("abs-S1", abs1, _points(abs1, 2, 103), set(), "[1,4,4,2] absolute value, isotropic cov_x"),
        Case("linear-S1", lin1, _points(lin1, 3, 104), {"linear"}, "[1,3] linear decoder (PPCA)"),
        Case("one-region-S1", one, _points(one, 3, 105), {"one_region"}, "ReLU net, one relevant region"),
        Case("linear-S2", lin2, _points(lin2, 3, 106), {"linear"}, "[2,4] linear decoder (FA)"),
        Case("relu-S2", relu2, _points(relu2, 2, 107), set(), "[2,5,3] ReLU"),
    ]
    if profile == "full":
        relu3 = random_network([3, 4, 3], "relu", cov_x=0.3, rng=17)
        M = np.random.default_rng(25).normal(size=(16, 16))
        relu2w = random_network([2, 5, 16], "relu", cov_x=0.05 * (M @ M.T / 16 + 0.5 * np.eye(16)), rng=25)
        far2w = relu2w.forward(np.zeros((1, 2)))[0] + 2.2 * np.random.default_rng(26).normal(size=16)
        relu4 = random_network([4, 3, 3], "leaky_relu", cov_x=0.4, rng=18)
        cases[0].X = _points(relu1, 6, 101, far)
        cases += [
            Case("relu-S2-far-D16", relu2w, _points(relu2w, 1, 113, far2w), {"far"},
                 "[2,5,16] ReLU, full 16x16 cov_x, a point far off the manifold"),
            Case("relu-S3", relu3, _points(relu3, 2, 108), set(), "[3,4,3] ReLU"),
            Case("leaky-S4", relu4, _points(relu4, 2, 109), set(), "[4,3,3] leaky-ReLU"),
        ]
    return cases


def error_bar_cases() -> list[Case]:
    """S = 4, 5, 6 ReLU networks for the S >= 4 error bar (full profile only).

    The first layer is at least as wide as S with generic (Gaussian) weights, so its hyperplane normals
    span latent space and no region has lineality: every region's integral takes the S' = S >= 4 routes
    (the cones of ``highdim.cones`` / ``cones5`` / ``cones6`` first, then the slices at S = 4 and randomised
    QMC for the pairs they leave), whose error bar ``Evaluation.log_marginal_error`` is what the check tests.
    The names keep their ``rqmc-`` prefix (reports compare by name). Two points each keep regions x points
    (57, 120 and 247 regions) small.
    """
    specs = [
        ("rqmc-S4", [4, 6, 5], 22, 110),
        ("rqmc-S5", [5, 7, 5], 23, 111),
        ("rqmc-S6", [6, 8, 6], 24, 112),
    ]
    cases = []
    for name, widths, net_seed, point_seed in specs:
        net = random_network(widths, "relu", cov_x=0.4, rng=net_seed)
        cases.append(
            Case(name, net, _points(net, 2, point_seed), {"rqmc"}, f"{widths} ReLU, no lineality (S >= 4 routes)")
        )
    return cases


def lemma2_case() -> tuple[Network, np.ndarray]:
    """A [1,4,3] ReLU net and a latent point z0 inside a region where g is injective."""
    net = random_network([1, 4, 3], "relu", cov_x=0.1, rng=21)
    return net, np.array([0.7])


def user_cases(net: Network, X: np.ndarray | None = None, seed: int = 0) -> list[Case]:
    """The suite's cases for the user's own model (``python -m verify --model M.json [--data X.npy]``).

    With data: one case on those points. Without: three points drawn from the model ("near") and two
    pushed 10 sqrt(trace Sigma_x) off its manifold ("far", log p(x) of order -10^2 and below, where only
    relative accuracy of tiny region masses gives the right answer). Tags: "linear" for a decoder
    without activation, "one_region" when the partition has a single region.
    """
    from engine.partition import partition

    tags = {"linear"} if net.is_linear else ({"one_region"} if len(partition(net)) == 1 else set())
    if X is not None:
        return [Case("user-data", net, np.asarray(X, dtype=np.float64), set(tags), "the user's model and data")]
    rng = np.random.default_rng([int(seed), 2020])
    near = net.sample(3, rng=rng)
    d = rng.normal(size=(2, net.data_dim))
    d *= 10.0 * np.sqrt(np.trace(net.cov_x)) / np.linalg.norm(d, axis=1, keepdims=True)
    far = net.sample(2, rng=rng) + d
    return [
        Case("user-near", net, near, set(tags), "the user's model, 3 points drawn from it"),
        Case("user-far", net, far, tags | {"far"}, "the user's model, 2 points 10 sqrt(tr Sx) off the manifold"),
    ]


def injective_latent_point(net: Network, seed: int = 0, s_max: float = 0.1) -> np.ndarray | None:
    """A latent point for Lemma 2, or None: g is injective there (rank-S Jacobian) and its region is wide
    enough that the posterior at noise ``s_max`` stays inside (distance to the boundary > 10 s_max /
    smallest singular value of the Jacobian)."""
    from engine.partition import partition

    rng = np.random.default_rng([int(seed), 2021])
    S = net.latent_dim
    regions = list(partition(net))
    for z0 in rng.multivariate_normal(np.zeros(S), net.cov_z, size=50):
        inside = [r for r in regions if np.all(r.H @ z0 <= r.c)]
        if not inside:
            continue
        r = inside[0]
        h = 1e-6
        J = (net.forward(z0[None] + h * np.eye(S)) - net.forward(z0[None])) / h  # (S, D): g affine near z0
        sv = np.linalg.svd(J, compute_uv=False)
        if len(sv) < S or sv[-1] <= 1e-8 * max(1.0, sv[0]):
            continue
        dist = np.min((r.c - r.H @ z0) / np.linalg.norm(r.H, axis=1)) if len(r.c) else np.inf
        if dist > 10 * s_max / sv[-1]:
            return z0
    return None
