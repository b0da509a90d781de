"""The plugin's own suite: workbench.testing's backbone contract, one test per check."""

from __future__ import annotations

import pytest

import workbench as wb
from workbench.testing import check_component, parametrize_with_checks
from workbench_tinyconv import TinyConv


@parametrize_with_checks("backbone", TinyConv, width=8)
def test_tinyconv_meets_the_backbone_contract(check):
    check()  # fails with the figure and the limit of the check that did not hold


def test_tinyconv_claims_images_only():
    results = check_component("backbone", TinyConv(width=8))
    shapes = [r.check for r in results if r.check.startswith("output shape")]
    assert shapes and all("(2,)" not in s and "(5,)" not in s for s in shapes)
    with pytest.raises(wb.ConfigError, match="images"):
        TinyConv().build((2,), 2)
