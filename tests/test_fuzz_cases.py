"""Fuzz findings pinned as replayable cases (``python -m verify replay``), each from a campaign on S = 2.

`python -m verify fuzz --budget 10m --seed 2 --workers 2` found these degenerate S = 2 nets (near-duplicate
units, a pencil of nearly parallel lines inside a strip 1e-5 wide, weights from 1e-5 to 1e10) on which the
compiled planar arrangement gave wrong regions: two regions overlapping at an interior point
(``region_map``), regions lost or gained under a permutation or a rescaling of units. The causes (crossings
solved on nearly parallel lines landing off their edge, side sequences that changed sign more than twice,
flatness judged against the parent's size) are fixed in ``engine.arrangement``, which now decides sides by
rounding as the double description does (two cases here, slivers 1.4e-13 |z| wide, failed with its old
FLAT = 1e-12 of a part's extent). Each case is replayed with the default partition (the arrangement at
S = 2, the double description at S >= 3 and where the arrangement declines) and with the double
description forced at S = 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from verify.cli import main

CASES = sorted((Path(__file__).parent / "fuzz_cases").glob("*.json"))
_IDS = [c.name.split("-")[0] + "-" + c.name.split("-")[1] for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=_IDS)
def test_pinned_fuzz_case_passes(case):
    """The default partition: the compiled planar arrangement at S = 2, the double description otherwise."""
    assert main(["replay", str(case)]) == 0


@pytest.mark.parametrize("case", CASES, ids=_IDS)
def test_pinned_fuzz_case_passes_with_the_double_description(case, monkeypatch):
    """The same cases with the double description at every S (``permutation-0-2a94``, a strip 2.5e-12 wide
    between parallel walls: 49 regions in both unit orders = exact, through the a-posteriori generator bound)."""
    monkeypatch.setattr(sys.modules["engine.partition"], "USE_PLANAR_ARRANGEMENT", False)
    assert main(["replay", str(case)]) == 0


def test_planar_arrangement_is_the_s2_default():
    assert sys.modules["engine.partition"].USE_PLANAR_ARRANGEMENT is True
