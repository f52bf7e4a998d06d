"""engine.ExactMarginal: exact log p(x) (Theorem 1) as a torch Distribution, with exact gradients.

Gradients are checked against Richardson-extrapolated central finite differences of the exact log p
computed by the numpy engine on the perturbed decoder (Network.from_torch + log_marginal, no autograd),
along random directions in the space of all parameters, for S = 1 and S = 2 and for linear, leaky,
PReLU, convolution, batch-norm and pooling decoders."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from engine import DGNInputError, ExactMarginal, Network, log_marginal

D64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _decoder(name: str) -> tuple[nn.Module, tuple]:
    torch.manual_seed(len(name))
    mods = {
        "s1_relu": (nn.Sequential(nn.Linear(1, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)), (1,)),
        "s1_prelu": (nn.Sequential(nn.Linear(1, 6), nn.PReLU(init=0.3), nn.Linear(6, 3)), (1,)),
        "s2_relu": (nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 3)), (2,)),
        "s2_leaky": (nn.Sequential(nn.Linear(2, 5), nn.LeakyReLU(0.2), nn.Linear(5, 4), nn.LeakyReLU(-0.5),
                                   nn.Linear(4, 3)), (2,)),
        "s1_conv": (nn.Sequential(nn.ConvTranspose1d(1, 2, 3, stride=2), nn.BatchNorm1d(2), nn.ReLU(),
                                  nn.Conv1d(2, 1, 2)), (1, 2)),
        "s1_pool": (nn.Sequential(nn.Linear(1, 8), nn.Unflatten(1, (2, 4)), nn.MaxPool1d(2), nn.ReLU6(),
                                  nn.AvgPool1d(2, stride=1), nn.Flatten(), nn.Linear(2, 2)), (1,)),
        "s2_conv_pool": (nn.Sequential(nn.Linear(2, 6), nn.Unflatten(1, (1, 6)), nn.Conv1d(1, 2, 2), nn.PReLU(2),
                                       nn.MaxPool1d(2), nn.Flatten(), nn.Linear(4, 3)), (2,)),
    }
    seq, shape = mods[name]
    seq = seq.double().eval()
    with torch.no_grad():
        for m in seq.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.copy_(torch.tensor([0.3, -0.2], dtype=D64))
                m.running_var.copy_(torch.tensor([0.7, 1.9], dtype=D64))
    return seq, shape


def _flat(params):
    return torch.cat([p.detach().reshape(-1) for p in params])


def _set(params, vec):
    i = 0
    with torch.no_grad():
        for p in params:
            p.copy_(vec[i:i + p.numel()].reshape(p.shape))
            i += p.numel()


def _exact_sum(seq, params, vec, X, input_shape, cov_x_index):
    """sum_n log p(x_n) by the numpy engine with parameters ``vec`` (cov_x last when it is learned)."""
    _set(params, vec)
    cov_x = float(vec[-1]) if cov_x_index else 0.3
    net = Network.from_torch(seq, cov_z=1.0, cov_x=cov_x, input_shape=input_shape)
    return float(log_marginal(net, X).sum())


def _richardson(f, theta, v, h=2e-3):
    def central(step):
        return (f(theta + step * v) - f(theta - step * v)) / (2 * step)

    return (4 * central(h / 2) - central(h)) / 3


@pytest.mark.parametrize("name", ["s1_relu", "s1_prelu", "s2_relu", "s2_leaky", "s1_conv", "s1_pool",
                                  "s2_conv_pool"])
def test_gradient_matches_finite_differences_of_the_exact_log_p(name):
    seq, shape = _decoder(name)
    cov_x = torch.tensor(0.3, dtype=D64, requires_grad=True)
    dist = ExactMarginal(seq, cov_z=1.0, cov_x=cov_x, input_shape=shape)
    torch.manual_seed(1)
    X = dist.sample((5,)).reshape(5, -1)
    params = [p for p in seq.parameters()] + [cov_x]
    for p in params:
        p.grad = None
    dist.log_prob(X.reshape(5, *dist.event_shape)).sum().backward()
    grad = torch.cat([p.grad.reshape(-1) for p in params]).numpy()
    theta = _flat(params)
    Xn = X.numpy()
    rng = np.random.default_rng(0)
    for _ in range(3):
        v = torch.from_numpy(rng.normal(size=theta.numel()))
        v[-1] *= 0.05  # keep the variance positive
        fd = _richardson(lambda t: _exact_sum(seq, params, t, Xn, shape, True), theta, v)
        want = float(grad @ v.numpy())
        scale = max(abs(want), 0.1 * np.linalg.norm(grad) * float(v.norm()) / math.sqrt(theta.numel()))
        assert abs(fd - want) <= 1e-6 * scale, (fd, want)
    _set(params, theta)


def test_gradients_for_cov_z_and_x_match_finite_differences():
    seq, shape = _decoder("s2_relu")
    cov_z = torch.tensor([0.8, 1.3], dtype=D64, requires_grad=True)
    cov_x = torch.tensor([0.2, 0.3, 0.25], dtype=D64, requires_grad=True)
    X = torch.tensor([[0.3, -0.2, 1.0], [1.5, 0.4, -0.7]], dtype=D64, requires_grad=True)
    lp = ExactMarginal(seq, cov_z, cov_x).log_prob(X).sum()
    lp.backward()

    def f(cz, cx, x):
        net = Network.from_torch(seq, cov_z=cz, cov_x=cx)
        return float(log_marginal(net, x).sum())

    base = (cov_z.detach().numpy(), cov_x.detach().numpy(), X.detach().numpy())
    for which, grad in enumerate((cov_z.grad, cov_x.grad, X.grad)):
        v = np.random.default_rng(which).normal(size=base[which].shape) * 0.1

        def along(t, which=which, v=v):
            args = list(base)
            args[which] = base[which] + float(t[0]) * v
            return f(*args)

        fd = _richardson(along, torch.zeros(1, dtype=D64), torch.ones(1, dtype=D64))
        want = float((grad.numpy() * v).sum())
        assert abs(fd - want) <= 1e-6 * max(abs(want), 1e-3), (which, fd, want)


def test_log_prob_value_shapes_and_float32_decoder():
    seq, shape = _decoder("s1_conv")
    dist = ExactMarginal(seq, cov_z=1.0, cov_x=0.3, input_shape=shape)
    assert dist.batch_shape == torch.Size() and dist.event_shape == torch.Size([1, 4])
    x = dist.sample((2, 3))
    assert x.shape == (2, 3, 1, 4)
    lp = dist.log_prob(x)
    assert lp.shape == (2, 3) and lp.dtype == D64
    want = log_marginal(Network.from_torch(seq, cov_x=0.3, input_shape=shape), x.reshape(6, 4).numpy())
    np.testing.assert_array_equal(lp.detach().reshape(-1).numpy(), want)
    seq32 = _decoder("s1_relu")[0].float()
    lp32 = ExactMarginal(seq32, cov_x=0.5).log_prob(torch.zeros(3))
    lp32.backward()
    assert lp32.shape == () and seq32[0].weight.grad.dtype == torch.float32


def test_validation_follows_the_distribution_contract():
    seq, _ = _decoder("s1_relu")
    dist = ExactMarginal(seq, cov_x=0.3, validate_args=True)
    with pytest.raises(ValueError):
        dist.log_prob(torch.tensor([0.0, float("nan"), 1.0], dtype=D64))
    with pytest.raises(ValueError):
        dist.log_prob(torch.zeros(2, 4, dtype=D64))
    with pytest.raises(DGNInputError, match="^cov_x: "):
        ExactMarginal(seq, cov_x=-1.0)
    with pytest.raises(DGNInputError, match=r"^decoder\[1\]: Tanh"):
        ExactMarginal(nn.Sequential(nn.Linear(1, 2), nn.Tanh()))


def test_sample_mean_matches_the_exact_mean_of_the_decoder_output():
    """E[x] = E[g(z)]: a dense Gauss-Legendre rule on [-9, 9] of the torch forward pass (error < 1e-10)
    is the oracle. A 5-standard-error band around it fails by chance with probability < 6e-7 per
    coordinate (20000 draws, normal approximation)."""
    seq, _ = _decoder("s1_relu")
    dist = ExactMarginal(seq, cov_x=0.3)
    torch.manual_seed(3)
    x = dist.sample((20000,)).numpy()
    nodes, weights = np.polynomial.legendre.leggauss(40)
    edges = np.linspace(-9, 9, 1801)
    z = (0.5 * np.diff(edges)[:, None] * nodes + 0.5 * (edges[1:] + edges[:-1])[:, None]).ravel()
    w = (0.5 * np.diff(edges)[:, None] * weights).ravel() * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    with torch.no_grad():
        g = seq(torch.from_numpy(z[:, None])).numpy()
    mean = w @ g
    se = x.std(0, ddof=1) / math.sqrt(len(x))
    assert np.all(np.abs(x.mean(0) - mean) <= 5 * se), (x.mean(0), mean, se)


@pytest.mark.parametrize("name", ["s2_leaky", "s2_conv_pool", "s1_pool"])
def test_region_maps_in_torch_equal_the_partition_affine_maps(name):
    """A_w, b_w re-expressed in torch with each region's activation pattern frozen (eq. 2) equal the
    engine partition's maps, and g(z) = A_w z + b_w at the regions' interior points (torch forward)."""
    from engine import partition
    from engine.torch_lowering import lower
    from engine.torch_marginal import region_maps

    seq, shape = _decoder(name)
    net = Network.from_torch(seq, input_shape=shape)
    part = partition(net)
    A, b = region_maps(lower(seq, shape), part.signs)
    np.testing.assert_allclose(A.detach().numpy(), part.A, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b.detach().numpy(), part.b, rtol=1e-12, atol=1e-12)
    Z = np.random.default_rng(0).normal(size=(200, net.latent_dim)) * 3
    idx = part.locate(Z)
    with torch.no_grad():
        g = seq(torch.from_numpy(Z).reshape(len(Z), *shape)).reshape(len(Z), -1).numpy()
    want = np.einsum("nds,ns->nd", A.detach().numpy()[idx], Z) + b.detach().numpy()[idx]
    np.testing.assert_allclose(g, want, rtol=1e-11, atol=1e-11)


def test_linear_decoder_value_and_gradients_equal_autograd_of_the_ppca_density():
    """One region: p(x) = N(x; b, W Sigma_z W^T + Sigma_x) (NOTES 1, PPCA); torch autograd of that closed
    form is an independent oracle for every gradient, with full covariance matrices as tensors."""
    torch.manual_seed(4)
    lin = nn.Linear(2, 3).double()
    cz = torch.tensor([[1.2, 0.3], [0.3, 0.7]], dtype=D64, requires_grad=True)
    cx = torch.tensor([[0.5, 0.1, 0.0], [0.1, 0.4, -0.05], [0.0, -0.05, 0.3]], dtype=D64, requires_grad=True)
    X = torch.randn(6, 3, dtype=D64, requires_grad=True)
    got = ExactMarginal(nn.Sequential(lin), cz, cx).log_prob(X)
    g_got = torch.autograd.grad(got.sum(), [lin.weight, lin.bias, cz, cx, X])
    W, b = lin.weight, lin.bias
    want = torch.distributions.MultivariateNormal(b, W @ cz @ W.T + cx).log_prob(X)
    g_want = torch.autograd.grad(want.sum(), [W, b, cz, cx, X])
    np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=0, atol=1e-12)
    for i, (a, c) in enumerate(zip(g_got, g_want)):
        if i in (2, 3):  # covariances: both forms symmetrise them differently, compare the symmetric parts
            a, c = 0.5 * (a + a.T), 0.5 * (c + c.T)
        np.testing.assert_allclose(a.numpy(), c.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_s3_gradient_matches_finite_differences():
    """S = 3 (certified solid integration; about 30 s with the kernels' first compilation)."""
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3)).double().eval()
    dist = ExactMarginal(seq, 1.0, 0.3)
    X = dist.sample((3,))
    dist.log_prob(X).sum().backward()
    params = list(seq.parameters())
    grad = torch.cat([p.grad.reshape(-1) for p in params])
    theta = _flat(params)
    rng = np.random.default_rng(0)
    for _ in range(2):
        v = torch.from_numpy(rng.normal(size=theta.numel()))
        fd = _richardson(lambda t: _exact_sum(seq, params, t, X.numpy(), (3,), False), theta, v)
        want = float(grad @ v)
        assert abs(fd - want) <= 1e-6 * abs(want), (fd, want)
    _set(params, theta)
