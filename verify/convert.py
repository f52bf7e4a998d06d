"""Public conversion helpers for foreign adapters (``crosscheck --cmd``, ``--impl``, ``fuzz``).

A foreign implementation receives the model as a ``cpa-dgn`` JSON dict (file ``{model}`` for
``--cmd``). These turn that dict into the forms other code usually wants:

* :func:`to_numpy_layers` -- plain numpy: ``[("linear", W, b), ("relu", 0.0), ("leaky_relu", 0.1), ...]``
  plus ``cov_z`` (S, S) and ``cov_x`` (D, D) as full matrices;
* :func:`to_torch_sequential` -- a float64 ``torch.nn.Sequential`` of Linear / ReLU / LeakyReLU
  (absolute value is ``LeakyReLU(-1)``), with the same forward pass ``g(z)`` (paper eq. 1-2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _network(model: Any):
    from engine.network import load_network

    return load_network(model if isinstance(model, dict) else Path(model))


def to_numpy_layers(model: dict | str | Path) -> dict[str, Any]:
    """``{"latent_dim", "layers", "cov_z", "cov_x"}`` with numpy arrays; layers as tuples (see module doc)."""
    from engine.network import Linear

    net = _network(model)
    layers: list[tuple] = []
    for layer in net.layers:
        if isinstance(layer, Linear):
            layers.append(("linear", np.array(layer.weight, dtype=np.float64), np.array(layer.bias, dtype=np.float64)))
        else:
            layers.append((layer.kind, float(layer.negative_slope)))
    return {"latent_dim": net.latent_dim, "layers": layers, "cov_z": np.array(net.cov_z, dtype=np.float64),
            "cov_x": np.array(net.cov_x, dtype=np.float64)}


def forward_numpy(layers: list[tuple], Z: np.ndarray) -> np.ndarray:
    """``g(Z)`` for rows of Z from :func:`to_numpy_layers`' layer list (CPA activation: max(h, eta h))."""
    H = np.atleast_2d(np.asarray(Z, dtype=np.float64))
    for layer in layers:
        if layer[0] == "linear":
            H = H @ layer[1].T + layer[2]
        else:
            H = np.where(H > 0, H, layer[1] * H)
    return H


def to_torch_sequential(model: dict | str | Path):
    """The decoder as a float64 ``torch.nn.Sequential`` (needs torch)."""
    return _network(model).to_torch()
