"""Fuzz findings pinned as replayable cases (``python -m verify replay``), each from a campaign on S = 2.

`python -m verify fuzz --budget 10m --seed 2 --workers 2` found these degenerate S = 2 nets (near-duplicate
units, a pencil of nearly parallel lines inside a strip 1e-5 wide, weights from 1e-5 to 1e10) on which the
compiled planar arrangement gave wrong regions: two regions overlapping at an interior point
(``region_map``), regions lost or gained under a permutation or a rescaling of units. The causes (crossings
solved on nearly parallel lines landing off their edge, side sequences that changed sign more than twice,
flatness judged against the parent's size) are fixed in ``engine.arrangement``; each case is replayed with
the default partition (the double description at every S, which resolves slivers down to rounding) and
with the arrangement switched on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from verify.cli import main

CASES = sorted((Path(__file__).parent / "fuzz_cases").glob("*.json"))
_IDS = [c.name.split("-")[0] + "-" + c.name.split("-")[1] for c in CASES]


# Known misses of the arrangement (the double description passes both): S = 2 nets with duplicated units and
# slivers thinner than the arrangement's FLAT = 1e-12 of a part's extent yet wider than float64 rounding, so its
# count depends on unit order. `permutation-0-e298...`: widths [4, 5, 11], a sliver at z ~ (4013, 1790), nearest
# wall 5.8e-10 away (1.4e-13 of |z|); `permutation-4-e4c2...`: 68 / 73 regions against the exact oracle's 78.
# This is why the double description is the default at every S. Strict: the test fails once they pass.
ARRANGEMENT_MISSES = {"permutation-0-e29803f349276696.json", "permutation-4-e4c24cd06fe2de78.json"}


def _with_the_arrangement(case):
    if case.name in ARRANGEMENT_MISSES:
        return pytest.param(case, marks=pytest.mark.xfail(strict=True, reason="sliver below the arrangement's FLAT"))
    return case


@pytest.mark.parametrize("case", CASES, ids=_IDS)
def test_pinned_fuzz_case_passes(case):
    """The default partition: the double description at every S."""
    assert main(["replay", str(case)]) == 0


@pytest.mark.parametrize("case", [_with_the_arrangement(c) for c in CASES], ids=_IDS)
def test_pinned_fuzz_case_passes_with_the_planar_arrangement(case, monkeypatch):
    """The same cases with the compiled S = 2 planar arrangement switched on."""
    monkeypatch.setattr(sys.modules["engine.partition"], "USE_PLANAR_ARRANGEMENT", True)
    assert main(["replay", str(case)]) == 0


def test_double_description_is_the_default():
    assert sys.modules["engine.partition"].USE_PLANAR_ARRANGEMENT is False
