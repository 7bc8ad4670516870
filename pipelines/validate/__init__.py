"""Great Expectations gates: a stage's output is checked before the next stage reads it."""

from pipelines.validate.checks import check_clean_posts, check_dataset
from pipelines.validate.gate import GateResult, ValidationFailed, run_gate
from pipelines.validate.suites import Suite, clean_posts_suite, dataset_suite

__all__ = [
    "GateResult",
    "Suite",
    "ValidationFailed",
    "check_clean_posts",
    "check_dataset",
    "clean_posts_suite",
    "dataset_suite",
    "run_gate",
]
