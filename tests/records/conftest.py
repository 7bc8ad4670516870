"""Fixtures for the records tests and the `tf` marker."""

from __future__ import annotations

import pytest
from records_testlib import SPEC, write_dataset


def pytest_configure(config):
    config.addinivalue_line("markers", "tf: needs TensorFlow (skipped when it is missing)")


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
