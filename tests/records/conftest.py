"""Fixtures for the records tests."""

from __future__ import annotations

import pytest
from records_testlib import SPEC, write_dataset

from records import wire


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


@pytest.fixture(params=["compiled", "numpy"])
def read_path(request, monkeypatch):
    """Runs a test on the reader's numba kernels and on its numpy path (a GPU host without
    numba): both must give the same columns and report the same damage."""
    if request.param == "compiled":
        if wire.compiled_kernels() is None:
            pytest.fail("numba is a dependency of the test environment (setup.cfg dev extra)")
    else:
        monkeypatch.setattr(wire, "_KERNELS", [None])
    return request.param
