"""Fixtures of the embedding tests."""

from __future__ import annotations

import pytest

from embedding_synthetic import union_of_subspaces


@pytest.fixture(scope="session")
def subspaces():
    return union_of_subspaces(0)
