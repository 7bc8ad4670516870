"""Fixtures for the records tests."""

from __future__ import annotations

import pytest
from records_testlib import SPEC, write_dataset


@pytest.fixture
def spec():
    return dict(SPEC)


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory):
    """60 records in 9 uncompressed shards (read-only: do not modify)."""
    return write_dataset(tmp_path_factory.mktemp("lake"))


@pytest.fixture(scope="session")
def tf():
    return pytest.importorskip("tensorflow")
