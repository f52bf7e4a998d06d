"""Exact lowering of eval-mode torch decoders (engine.torch_lowering): forward equality per module type,
a DCGAN-style decoder against mpmath quadrature of the TORCH forward pass, and one-line refusals."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from engine import DGNInputError, Network, log_marginal
from engine.torch_lowering import Abs

D64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _randomise(seq: nn.Module, seed: int) -> nn.Module:
    """float64, eval mode, non-trivial batch-norm statistics and PReLU slopes."""
    gen = torch.Generator().manual_seed(seed)
    seq = seq.double()
    with torch.no_grad():
        for m in seq.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen, dtype=D64))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen, dtype=D64) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.randn(m.num_features, generator=gen, dtype=D64))
                    m.bias.copy_(torch.randn(m.num_features, generator=gen, dtype=D64))
            if isinstance(m, nn.PReLU):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen, dtype=D64))
    return seq.eval()


def _check_forward(seq: nn.Module, input_shape, seed: int = 0, n: int = 64, scale: float = 2.0):
    """Lowered forward vs torch forward on random latents; returns the network."""
    net = Network.from_torch(seq, input_shape=input_shape)
    assert net.latent_dim == math.prod(input_shape)
    Z = np.random.default_rng(seed).normal(size=(n, net.latent_dim)) * scale
    with torch.no_grad():
        want = seq(torch.from_numpy(Z).reshape(n, *input_shape)).reshape(n, -1).numpy()
    got = net.forward(Z)
    assert got.shape == want.shape
    err = np.abs(got - want).max() / max(1.0, np.abs(want).max())
    assert err < 1e-13, err
    return net


CASES = {
    "linear": (lambda: nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2, bias=False)), (3,)),
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(2, 4, 3, stride=2, padding=2, dilation=2, groups=2)), (2, 7)),
    "conv1d_circular": (lambda: nn.Sequential(nn.Conv1d(2, 3, 3, padding=1, padding_mode="circular")), (2, 5)),
    "conv2d": (lambda: nn.Sequential(nn.Conv2d(2, 4, (3, 2), stride=(2, 1), padding=1, groups=2, bias=False)),
               (2, 4, 3)),
    "convtranspose1d": (lambda: nn.Sequential(nn.ConvTranspose1d(4, 2, 3, stride=3, padding=1, output_padding=2,
                                                                 dilation=2, groups=2)), (4, 3)),
    "convtranspose2d": (lambda: nn.Sequential(nn.ConvTranspose2d(2, 3, 4, stride=2, padding=1, output_padding=1)),
                        (2, 2, 2)),
    "batchnorm1d": (lambda: nn.Sequential(nn.BatchNorm1d(3), nn.Flatten(), nn.Linear(12, 2)), (3, 4)),
    "batchnorm1d_flat": (lambda: nn.Sequential(nn.BatchNorm1d(3, affine=False)), (3,)),
    "batchnorm2d": (lambda: nn.Sequential(nn.BatchNorm2d(2)), (2, 2, 3)),
    "dropout": (lambda: nn.Sequential(nn.Dropout(0.5), nn.Dropout2d(0.3), nn.AlphaDropout(0.2)), (2, 3, 2)),
    "identity_flatten_unflatten": (lambda: nn.Sequential(nn.Identity(), nn.Unflatten(1, (2, 3)), nn.Flatten()),
                                   (6,)),
    "upsample_nearest": (lambda: nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                               nn.UpsamplingNearest2d(scale_factor=(1, 3))), (2, 2, 2)),
    "upsample_nearest1d": (lambda: nn.Sequential(nn.Upsample(size=7), nn.Upsample(size=9, mode="nearest-exact")),
                           (2, 3)),
    "avgpool": (lambda: nn.Sequential(nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False),
                                      nn.AvgPool2d(2, ceil_mode=True)), (2, 3, 4)),
    "avgpool1d": (lambda: nn.Sequential(nn.AvgPool1d(3, stride=2, padding=1)), (2, 6)),
    "relu_leaky_abs": (lambda: nn.Sequential(nn.Linear(2, 5), nn.ReLU(), nn.Linear(5, 5), nn.LeakyReLU(0.2),
                                             nn.Linear(5, 4), Abs(), nn.Linear(4, 3)), (2,)),
    "prelu_one": (lambda: nn.Sequential(nn.Linear(2, 5), nn.PReLU()), (2,)),
    "prelu_channels": (lambda: nn.Sequential(nn.Conv1d(1, 3, 2), nn.PReLU(3)), (1, 4)),
    "relu6": (lambda: nn.Sequential(nn.Linear(2, 6), nn.ReLU6()), (2,)),
    "hardtanh": (lambda: nn.Sequential(nn.Linear(2, 6), nn.Hardtanh(-0.5, 1.5)), (2,)),
    "maxpool1d": (lambda: nn.Sequential(nn.MaxPool1d(3, stride=2, padding=1, dilation=2, ceil_mode=True)), (2, 9)),
    "maxpool2d": (lambda: nn.Sequential(nn.MaxPool2d((2, 3), stride=(1, 2), padding=(1, 1))), (2, 3, 5)),
    "maxpool2d_dilated": (lambda: nn.Sequential(nn.MaxPool2d(2, dilation=2)), (1, 5, 5)),
    "nested": (lambda: nn.Sequential(nn.Linear(2, 4), nn.Sequential(nn.ReLU(), nn.Sequential(nn.Linear(4, 3)))),
               (2,)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_module_type_lowers_exactly(name):
    make, shape = CASES[name]
    _check_forward(_randomise(make(), seed=len(name)), shape, seed=len(name))


def test_consecutive_affine_maps_are_merged():
    seq = _randomise(nn.Sequential(nn.Linear(2, 5), nn.BatchNorm1d(5), nn.Dropout(), nn.Linear(5, 4), nn.ReLU(),
                                   nn.Identity(), nn.Linear(4, 3)), 1)
    net = _check_forward(seq, (2,))
    assert [lay.type for lay in net.layers] == ["linear", "relu", "linear"]


def test_default_input_shape_of_a_convolutional_decoder():
    seq = _randomise(nn.Sequential(nn.ConvTranspose2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(18, 2)), 2)
    net = Network.from_torch(seq)
    assert net.latent_dim == 3 and net.data_dim == 2
    _check_forward(seq, (3, 1, 1))


def dcgan_decoder(seed: int = 0) -> nn.Sequential:
    """A small DCGAN-style 2-D decoder with every module family the issue names."""
    torch.manual_seed(seed)
    seq = nn.Sequential(
        nn.Linear(1, 8), nn.PReLU(), nn.Unflatten(1, (2, 2, 2)),
        nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1), nn.BatchNorm2d(3), nn.PReLU(3),
        nn.Dropout2d(0.2),
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU6(), nn.MaxPool2d(2)),
        nn.Hardtanh(-1.0, 1.5), nn.Flatten(), nn.Linear(32, 6),
    )
    seq = _randomise(seq, seed)
    with torch.no_grad():
        seq[0].weight.mul_(3.0)
    return seq


def test_dcgan_decoder_lowers_exactly():
    seq = dcgan_decoder()
    net = _check_forward(seq, (1,), n=400, scale=3.0)
    assert net.data_dim == 6


def _torch_kinks(g, lo: float, hi: float, n: int = 24001, depth: int = 0) -> list:
    """Kinks of a piecewise-linear g on [lo, hi] from the torch forward pass only: non-zero second
    differences flag a run of grid points, and the kink is where the lines through the two grid points on
    either side meet; a run that does not fit one kink (g off either line at its points) is refined."""
    z = np.linspace(lo, hi, n)
    G = g(z)
    scale = 1.0 + np.abs(G).max()
    flagged = np.abs(G[2:] - 2 * G[1:-1] + G[:-2]).max(axis=1) > 1e-9 * scale
    kinks: list = []
    i = 0
    while i < n - 2:
        if not flagged[i]:
            i += 1
            continue
        j = i
        while j + 1 < n - 2 and flagged[j + 1]:
            j += 1
        a, b = i, j + 2  # the run's kinks lie in (z[a], z[b]); lines through (a-1, a) and (b, b+1)
        i = j + 1
        if a < 1 or b > n - 2:
            assert depth < 8, "a kink at the end of the range"
            kinks += _torch_kinks(g, z[max(a - 1, 0)], z[min(b + 1, n - 1)], 401, depth + 1)
            continue
        sl = (G[a] - G[a - 1]) / (z[a] - z[a - 1])
        sr = (G[b + 1] - G[b]) / (z[b + 1] - z[b])
        k = int(np.argmax(np.abs(sl - sr)))
        zk = z[a] + (G[b, k] - sr[k] * (z[b] - z[a]) - G[a, k]) / (sl[k] - sr[k])
        left = G[a] + sl * (np.r_[z[a:b + 1], zk][:, None] - z[a])
        right = G[b] + sr * (np.r_[z[a:b + 1], zk][:, None] - z[b])
        at = np.vstack([G[a:b + 1], g(np.array([zk]))])
        fits = np.minimum(np.abs(at - left).max(1), np.abs(at - right).max(1)) <= 1e-9 * scale
        if z[a] < zk < z[b] and fits.all():
            kinks.append(zk)
        else:
            assert depth < 8, "kinks closer than the grid can resolve"
            kinks += _torch_kinks(g, z[a - 1], z[b + 1], 401, depth + 1)
    return kinks


def _torch_quadrature(seq: nn.Module, X: np.ndarray, var_x: float) -> np.ndarray:
    """log p(x) = log int N(z; 0, 1) N(x; g(z), var_x I) dz for each row of X, g the TORCH forward pass:
    30-point Gauss-Legendre on panels of width <= 0.04 of [-9, 9] between the kinks of g (found by
    :func:`_torch_kinks`), shifted by the integrand's maximum; no engine code."""

    def g(z):
        with torch.no_grad():
            return seq(torch.from_numpy(np.asarray(z, dtype=np.float64)[:, None])).reshape(len(z), -1).numpy()

    lo, hi = -9.0, 9.0  # the prior mass outside is 2e-19
    edges = np.unique(np.r_[lo, hi, _torch_kinks(g, lo, hi, 9001)])
    nodes, weights = np.polynomial.legendre.leggauss(30)
    zs, ws = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        cuts = np.linspace(a, b, int(np.ceil((b - a) / 0.04)) + 1)
        half, mid = 0.5 * np.diff(cuts), 0.5 * (cuts[1:] + cuts[:-1])
        zs.append((half[:, None] * nodes + mid[:, None]).ravel())
        ws.append((half[:, None] * weights).ravel())
    z, w = np.concatenate(zs), np.concatenate(ws)
    G = g(z)
    D = X.shape[1]
    out = []
    for x in X:
        lj = (-0.5 * (D + 1) * np.log(2 * np.pi) - 0.5 * D * np.log(var_x) - 0.5 * ((x[None] - G) ** 2).sum(1) / var_x
              - 0.5 * z * z)
        peak = lj.max()
        out.append(float(peak + np.log(np.sum(w * np.exp(lj - peak)))))
    return np.array(out)


def test_dcgan_exact_log_p_matches_quadrature_of_the_torch_forward():
    seq = dcgan_decoder()
    var_x = 0.05
    net = Network.from_torch(seq, cov_z=1.0, cov_x=var_x)
    rng = np.random.default_rng(5)
    with torch.no_grad():
        g = seq(torch.tensor([[-1.3], [0.4], [2.1]], dtype=D64)).numpy()
    X = g + rng.normal(scale=math.sqrt(var_x), size=g.shape)
    exact = log_marginal(net, X)
    oracle = _torch_quadrature(seq, X, var_x)
    np.testing.assert_allclose(exact, oracle, rtol=0.0, atol=1e-8)


def test_to_torch_keeps_abs_as_its_own_module():
    seq = _randomise(nn.Sequential(nn.Linear(2, 4), Abs(), nn.Linear(4, 3), nn.LeakyReLU(0.3), nn.Linear(3, 2)), 3)
    net = _check_forward(seq, (2,))
    back = net.to_torch()
    assert [type(m).__name__ for m in back] == ["Linear", "Abs", "Linear", "LeakyReLU", "Linear"]
    Z = np.random.default_rng(0).normal(size=(10, 2))
    with torch.no_grad():
        np.testing.assert_allclose(back(torch.from_numpy(Z)).numpy(), net.forward(Z), rtol=1e-14, atol=1e-14)


class Custom(nn.Module):
    def forward(self, h):
        return h


class CustomSequential(nn.Sequential):
    def forward(self, h):
        return super().forward(h) * 2


def _train(m):
    return m.train()


REFUSALS = [
    (lambda: nn.Tanh(), "decoder[1]: Tanh is not a continuous piecewise-affine layer"),
    (lambda: nn.Sigmoid(), "decoder[1]: Sigmoid is not a continuous piecewise-affine layer"),
    (lambda: nn.Softplus(), "decoder[1]: Softplus is not a continuous piecewise-affine layer"),
    (lambda: nn.GELU(), "decoder[1]: GELU is not a continuous piecewise-affine layer"),
    (lambda: nn.ELU(), "decoder[1]: ELU is not a continuous piecewise-affine layer"),
    (lambda: nn.SiLU(), "decoder[1]: SiLU is not a continuous piecewise-affine layer"),
    (lambda: _train(nn.BatchNorm1d(4)), "decoder[1]: BatchNorm1d is in training mode"),
    (lambda: nn.BatchNorm1d(4, track_running_stats=False).eval(), "decoder[1]: BatchNorm1d has track_running_stats"),
    (lambda: _train(nn.Dropout(0.1)), "decoder[1]: Dropout is in training mode"),
    (lambda: nn.Upsample(scale_factor=2, mode="linear"), "decoder[1]: Upsample mode 'linear' is not supported"),
    (lambda: Custom(), r"decoder[1]: Custom is not a continuous piecewise-affine layer the lowering knows "
                       r"(a custom module)"),
    (lambda: nn.ModuleList([nn.ReLU()]), "decoder[1]: is a ModuleList, which has no forward pass"),
    (lambda: CustomSequential(nn.ReLU()), "decoder[1]: CustomSequential overrides Sequential.forward"),
    (lambda: nn.MaxPool1d(2, return_indices=True), "decoder[1]: MaxPool1d returns indices"),
]


@pytest.mark.parametrize("make,message", REFUSALS, ids=[m for _, m in REFUSALS])
def test_refusals_name_index_type_and_reason_on_one_line(make, message):
    mod = make()
    seq = nn.Sequential(nn.Linear(2, 4), mod, nn.Linear(4, 2)).eval()
    if "training mode" in message:  # eval() above reset it: the module under test goes back to training
        mod.train()
    if isinstance(mod, nn.Upsample | nn.MaxPool1d):
        seq = nn.Sequential(nn.Linear(2, 4), nn.Unflatten(1, (1, 4)), mod, nn.Flatten(), nn.Linear(2 * 4 if
                            isinstance(mod, nn.Upsample) else 2, 2))
        message = message.replace("decoder[1]", "decoder[2]")
    with pytest.raises(DGNInputError) as info:
        Network.from_torch(seq)
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_refusal_inside_a_nested_sequential_names_the_path():
    seq = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.ReLU(), nn.Tanh()), nn.Linear(3, 1))
    with pytest.raises(DGNInputError, match=r"^decoder\[1\]\[1\]: Tanh"):
        Network.from_torch(seq)


def test_decoder_off_the_cpu_is_refused_on_one_line():
    seq = nn.Sequential(nn.Linear(2, 3, device="meta"))
    with pytest.raises(DGNInputError, match=r"^decoder: has tensors on meta; move it to the CPU"):
        Network.from_torch(seq)
