"""Running a suite as a gate: pass, or stop with a message naming expectation and column.

Each gate runs in an ephemeral Great Expectations context (nothing to set up on a worker
or an Airflow task), through a Checkpoint whose ``UpdateDataDocsAction`` renders the
result as GE Data Docs HTML into ``docs_dir`` (``reports/<run_id>/data_docs/``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import pandas as pd

from core.engines import require
from pipelines.validate.suites import Suite

__all__ = ["GateResult", "ValidationFailed", "run_gate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateResult:
    """The outcome of one suite over one frame."""

    suite: str
    success: bool
    evaluated: int  # expectations evaluated
    failures: list[str] = field(default_factory=list)  # one line per failed expectation
    docs_index: str | None = None  # Data Docs index.html, when docs were written

    def summary(self) -> str:
        status = "passed" if self.success else "FAILED"
        return f"{self.suite}: {status} ({self.evaluated - len(self.failures)}/{self.evaluated})"


class ValidationFailed(RuntimeError):
    """A gate failed; the message names the suite, each failed expectation and its column."""

    def __init__(self, result: GateResult) -> None:
        self.result = result
        docs = f"; Data Docs: {result.docs_index}" if result.docs_index else ""
        super().__init__(f"gate {result.suite}: " + "; ".join(result.failures) + docs)


def _describe(r) -> str:
    cfg = r.expectation_config
    kwargs = {k: v for k, v in cfg.kwargs.items() if k != "batch_id"}
    where = kwargs.pop("column", None) or "/".join(
        str(kwargs.pop(k)) for k in ("column_A", "column_B") if k in kwargs) or "table"
    res = r.result or {}
    sample = res.get("partial_unexpected_list") or res.get("observed_value")
    count = res.get("unexpected_count")
    found = f"{count} unexpected, e.g. {sample[:3]!r}" if count else f"observed {sample!r}"
    if r.exception_info and r.exception_info.get("raised_exception"):
        found = r.exception_info.get("exception_message", "raised")
    return f"{cfg.type} on {where} failed: {found}"


def run_gate(frame: pd.DataFrame, suite: Suite, *, docs_dir: str | None = None,
             raise_on_failure: bool = True) -> GateResult:
    """Validates ``frame`` against ``suite`` and writes Data Docs into ``docs_dir``.

    Raises:
        ValidationFailed: the suite failed and ``raise_on_failure`` is set.
        MissingEngineError: great-expectations is not installed.
    """
    gx = require("great_expectations", for_what="the data quality gates")
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # GE draws a tqdm bar per validation on stderr; the CLI shows its own progress.
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    actions = []
    if docs_dir is not None:
        os.makedirs(docs_dir, exist_ok=True)
        context.add_data_docs_site(site_name="shardforge", site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": os.path.abspath(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="data_docs",
                                                          site_names=["shardforge"]))
    batch = (context.data_sources.add_pandas(f"{suite.name}_source")
             .add_dataframe_asset(suite.name)
             .add_batch_definition_whole_dataframe("whole"))
    suite = context.suites.add(gx.ExpectationSuite(name=suite.name,
                                                   expectations=list(suite.expectations)))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite.name, data=batch, suite=suite))
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name=f"{suite.name}_gate", validation_definitions=[definition], actions=actions))
    outcome = checkpoint.run(batch_parameters={"dataframe": frame})
    validation = next(iter(outcome.run_results.values()))
    failures = [_describe(r) for r in validation.results if not r.success]
    index = os.path.join(os.path.abspath(docs_dir), "index.html") if docs_dir else None
    result = GateResult(suite=suite.name, success=not failures, evaluated=len(validation.results),
                        failures=failures, docs_index=index)
    log.info("%s", result.summary())
    if failures and raise_on_failure:
        raise ValidationFailed(result)
    return result
