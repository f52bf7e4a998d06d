"""Wrong: units of a layer whose hyperplanes coincide (rows (w, b) equal up to a non-zero factor) are
"merged" by dropping the copies and their outgoing weights, as if duplicates were redundant."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # fuzz_common, when loaded as file.py:claims


import numpy as np
from fuzz_common import exact_terms, mixture_claims

import engine
from engine.network import Linear


def _dedupe(net):
    layers = list(net.layers)
    for i, _ in net.activations:
        lin = i - 1
        nxt = next(j for j in range(i + 1, len(layers)) if isinstance(layers[j], Linear))
        W, b = layers[lin].weight, layers[lin].bias
        rows = np.hstack([W, b[:, None]])
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        unit = np.where(norms > 0, rows / np.where(norms > 0, norms, 1.0), 0.0)
        keep = []
        for u in range(len(rows)):
            if not any(abs(abs(unit[u] @ unit[k]) - 1.0) < 1e-12 for k in keep):
                keep.append(u)
        layers[lin] = Linear(W[keep], b[keep])
        layers[nxt] = Linear(layers[nxt].weight[:, keep], layers[nxt].bias)
    return net.replace(layers=layers)


def claims(model, X):
    net = _dedupe(engine.load_network(model))
    _, _, log_joint, means, covs = exact_terms(net.to_dict(), X)
    return mixture_claims(log_joint, means, covs)
