"""Exact-gradient maximum likelihood (engine.baselines.exact_mle) and its place in the experiments."""

import numpy as np
import pytest
import torch

from engine import datasets, log_marginal
from engine.baselines.exact_mle import train_exact_mle
from engine.baselines.training import TrainConfig
from engine.em import init_random

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_full_batch_history_is_the_exact_nll_and_small_steps_descend():
    X = datasets.circle(n=60, noise=0.05, rng=0)
    net0 = init_random([1, 6, 2], X, rng=0)
    res = train_exact_mle(net0, X, TrainConfig(lr=2e-3, n_steps=12, grade_every=4))
    h = res.history
    assert h["step"] == [0, 4, 8, 12] and len(h["nll_steps"]) == 12
    # the recorded NLLs are the exact mean NLL of the parameters at that step (independent evaluation)
    assert h["nll"][0] == pytest.approx(-log_marginal(net0, X).mean(), rel=0, abs=1e-12)
    assert h["nll"][-1] == pytest.approx(-log_marginal(res.network, X).mean(), rel=0, abs=1e-12)
    # small full-batch steps along the exact gradient: the exact NLL goes down at every step
    assert np.all(np.diff(h["nll_steps"] + [h["nll"][-1]]) < 0)
    assert not res.diverged and res.encoder is None


def test_minibatch_steps_are_graded_on_all_the_data():
    X = datasets.wave(n=40, noise=0.05, rng=0)
    net0 = init_random([1, 4, 2], X, rng=1)
    res = train_exact_mle(net0, X, TrainConfig(lr=1e-2, n_steps=4, grade_every=2, batch_size=10), full_batch=False)
    assert res.history["step"] == [0, 2, 4] and res.history["nll_steps"] == []
    assert res.history["nll"][-1] == pytest.approx(-log_marginal(res.network, X).mean(), rel=0, abs=1e-12)


def test_the_experiment_runs_exact_mle_next_to_em(tmp_path):
    from engine.experiments import run_experiment

    res = run_experiment("circle", tmp_path, seeds=(0,), n_steps=3, em_iter=2, methods=("exact_mle",), lrs=(),
                         n_points=40, grade_every=3, iwae_ks=(1, 10), figures=None, log=lambda *_: None)
    (run,) = res["runs"]
    assert run["method"] == "exact_mle" and run["label"] == "exact MLE lr=0.01" and run["iwae_gaps"] == {}
    assert np.isfinite(run["final_nll"]) and run["history"]["step"] == [0, 3]
    assert run["history"]["nll"][0] == pytest.approx(res["em"][0]["nll"][0], abs=1e-12)  # same initialisation
    assert (tmp_path / "results.json").exists()


def test_readme_example_trains_by_exact_maximum_likelihood():
    """The README's five-line example, run for 5 steps instead of 500: the exact NLL goes down."""
    from pathlib import Path

    text = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    section = text[text.index("## Torch decoders"):]
    code = section[section.index("```python") + len("```python"):section.index("```", section.index("```python") + 9)]
    assert "range(500)" in code
    torch.manual_seed(0)
    scope: dict = {}
    exec(compile(code.replace("range(500)", "range(5)"), "README.md", "exec"), scope)
    import engine

    after = -engine.ExactMarginal(scope["dec"], cov_z=1.0, cov_x=0.01).log_prob(scope["X"]).mean()
    torch.manual_seed(0)
    scope0: dict = {}
    exec(compile(code.replace("range(500)", "range(0)").replace("loss = ", "pass  # "), "README.md", "exec"), scope0)
    before = -engine.ExactMarginal(scope0["dec"], cov_z=1.0, cov_x=0.01).log_prob(scope0["X"]).mean()
    assert float(after.detach()) < float(before.detach())
