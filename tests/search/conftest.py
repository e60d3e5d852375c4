"""Fixtures the search tests share: the trained digits CNN and its per-group space.

A module that needs another model (the narrow CNN of the rung tests) overrides them.
"""

from __future__ import annotations

import pytest

from nasprune.search import SearchSpace


@pytest.fixture(scope="module")
def trained(trained_digits_cnn):
    return trained_digits_cnn


@pytest.fixture(scope="module")
def space(trained, digits) -> SearchSpace:
    return SearchSpace(trained, digits.example_input())
