"""Run ids: unique within a process and sorted in the order they were made."""

from __future__ import annotations

import re

from shardforge.stages import new_run_id


def test_run_ids_are_unique_and_sort_in_creation_order():
    ids = [new_run_id() for _ in range(2000)]  # far more than one per microsecond
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(re.fullmatch(r"run-\d{8}T\d{12}Z", i) for i in ids)
