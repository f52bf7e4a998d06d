"""Input hygiene (engine.validation.check_data): every entry point refuses complex, object, boolean, sparse and
ragged input with one line naming the field and the fix (exit 2 on the command lines), never a number
silently converted (numpy keeps the real part of complex data with only a ComplexWarning)."""

import json

import numpy as np
import pytest
from scipy import sparse

import engine
from engine import EM, DGNInputError
from engine.cli import main as engine_main
from engine.validation import DGNInputTypeError, check_data, check_random_state

NET = engine.random_network([1, 3, 2], rng=0)
GOOD = np.array([[0.1, 0.2], [0.3, -0.4], [1.0, 0.5]])

BAD = {
    "complex": (GOOD + 1j, "Complex data not supported"),
    "complex-zero-imaginary": (GOOD.astype(complex), "Complex data not supported"),
    "object": (np.array([[0.1, "a"], [0.3, 0.4], [1.0, 0.5]], dtype=object), "not a real number"),
    "bool": (GOOD > 0, "boolean"),
    "bool-object": (np.array([[True, 0.2], [0.3, 0.4], [1.0, 0.5]], dtype=object), "not a real number"),
    "sparse": (sparse.csr_matrix(GOOD), "sparse"),
    "ragged": ([[0.1, 0.2], [0.3], [1.0, 0.5]], "ragged"),
    "strings": (np.array([["0.1", "0.2"], ["0.3", "0.4"], ["1", "0.5"]]), "string"),
    "huge-int": (np.array([[2 ** 60, 1], [0, 1], [1, 1]]), "2\\*\\*53"),
}
ENTRY_POINTS = {
    "evaluate": lambda X: engine.evaluate(NET, X),
    "impute": lambda X: engine.impute(NET, X),
    "fit": lambda X: EM(NET, max_iter=1).fit(X),
    "fit-network-none": lambda X: EM(latent_dim=1, hidden=(3,), max_iter=1).fit(X),
    "sample_posterior": lambda X: engine.sample_posterior(NET, X, 2),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("case", sorted(BAD))
def test_every_entry_point_refuses_in_one_line(entry, case):
    X, match = BAD[case]
    if entry == "sample_posterior":
        X = X[:1] if not isinstance(X, list) else [[0.1], [0.3, 0.4]]
    with pytest.raises(DGNInputError, match=match) as info:
        ENTRY_POINTS[entry](X)
    message = str(info.value)
    assert "\n" not in message and message.startswith(("data", "x")) and "; " in message  # field; fix


def test_crosscheck_refuses_complex():
    from verify.crosscheck import crosscheck

    with pytest.raises(DGNInputError, match="Complex"):
        crosscheck(NET, GOOD + 1j, {"log_marginal": [0.0, 0.0, 0.0]})


def test_non_number_elements_are_also_type_errors():
    with pytest.raises(TypeError, match="argument must be a string.* number"):
        check_data(np.array([[1.0, {}]], dtype=object))
    assert issubclass(DGNInputTypeError, DGNInputError)


def test_exact_conversions_are_accepted():
    obj = np.array([[1, 2.5], [np.float32(0.25), np.int64(3)]], dtype=object)
    np.testing.assert_array_equal(check_data(obj), [[1.0, 2.5], [0.25, 3.0]])
    np.testing.assert_array_equal(check_data(np.array([[1, 2]], dtype=np.int32)), [[1.0, 2.0]])
    np.testing.assert_array_equal(check_data(GOOD.astype(np.float32)), GOOD.astype(np.float32).astype(float))
    assert check_data([1.0, 2.0], 2).shape == (1, 2) and check_data([1.0, 2.0], 1).shape == (2, 1)
    with pytest.raises(DGNInputError, match="2-D"):
        check_data([1.0, 2.0], 2, one_dim="error")
    nan = check_data([[np.nan, 1.0]], allow_nan=True)
    assert np.isnan(nan[0, 0])
    with pytest.raises(DGNInputError, match="infinite"):
        check_data([[np.inf, 1.0]], allow_nan=True)


def test_random_state():
    assert isinstance(check_random_state(3), np.random.Generator)
    for bad in ("abc", -1, 1.5, True):
        with pytest.raises(DGNInputError, match="random_state"):
            check_random_state(bad)


@pytest.mark.parametrize("command", ["evaluate", "fit", "impute"])
@pytest.mark.parametrize("case", ["complex", "bool", "strings"])
def test_clis_exit_2_with_one_line(tmp_path, capsys, command, case):
    engine.save_network(NET, tmp_path / "m.json")
    np.save(tmp_path / "x.npy", BAD[case][0])
    extra = {"evaluate": ["--out", str(tmp_path / "r.json")],
             "fit": ["--max-iter", "1", "--out", str(tmp_path / "f.json")],
             "impute": ["--out", str(tmp_path / "y.npy")]}[command]
    rc = engine_main([command, "--model", str(tmp_path / "m.json"), "--data", str(tmp_path / "x.npy"), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and ("data" in err) and err.startswith("error:")
    json.dumps(err)
