"""``python -m engine experiment``: a tiny smoke run writes results.json and every figure."""

import json

from engine.cli import main as engine_main


def test_quick_circle_experiment(tmp_path):
    out = tmp_path / "circle"
    rc = engine_main(["experiment", "circle", "--out", str(out), "--quick", "--methods", "iwae", "rem_exact"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert {r["label"] for r in res["runs"]} == {
        "VAE lr=0.005",
        "VAE lr=0.001",
        "VAE lr=0.0001",
        "IWAE lr=0.001",
        "REM v1 (exact s) lr=0.001",
    }
    assert res["summary"]["min_exact_kl_over_all_gradings"] >= 0
    for name in (
        "fig3_posterior.png",
        "fig4_nll.png",
        "fig5_kl.png",
        "fig6_manifolds.png",
        "fig_iwae_gap.png",
    ):
        assert (out / name).stat().st_size > 10_000
    em = res["em"][0]["nll"]
    assert all(b <= a + 1e-9 for a, b in zip(em, em[1:]))  # EM never decreases the likelihood


def test_unknown_experiment_exits_2(tmp_path, capsys):
    try:
        rc = engine_main(["experiment", "moons", "--out", str(tmp_path)])
    except SystemExit as exc:  # argparse choices
        rc = exc.code
    assert rc == 2
