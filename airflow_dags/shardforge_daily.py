"""``shardforge_daily``: one DAG run per ``dt`` partition, raw feeds → shards → models → report.

Built from the one declaration of the stage sequence, :func:`shardforge.pipeline.declared_stages`:
one task per declared stage, in that order, with the stage's ``after`` as its upstream and
the operator its engine calls for (Spark: ``spark-submit`` of ``shardforge/spark_jobs.py``;
Beam: the pipeline module on the ``beam_runner`` param; Great Expectations and the drift
gates: in the worker; torch: ``torchrun``; the report in the worker). ``prepare`` comes first: it ships
the project to Spark. ``shardforge run`` runs the same stages in the same order.

Parsing imports only Airflow, the project's config (pydantic, PyYAML, the torch-free model
kinds) and :mod:`airflow_dags.tasks`, whose functions import the engines when they run.

Environment read at parse time:
    SHARDFORGE_CONFIG: the config whose stages and ``models:`` make the tasks, and the
        default of the ``config`` param (default: the embedded ``conf/sample.yaml``).
    SHARDFORGE_DAG_RETRIES: retries of each task (default 2; exponential backoff).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Param, TriggerRule, get_current_context, task

from airflow_dags import tasks
from airflow_dags.beam_compat import BeamPythonOperator
from core.config import DEFAULT_CONFIG_PATH, ShardforgeConfig, load_config
from shardforge.pipeline import Stage, declared_stages

__all__ = ["build_dag", "dag"]

DAG_ID = "shardforge_daily"
PROJECT_ROOT = Path(tasks.__file__).resolve().parents[1]
SPARK_APPLICATION = PROJECT_ROOT / "shardforge" / "spark_jobs.py"
CONFIG = os.environ.get("SHARDFORGE_CONFIG") or str(DEFAULT_CONFIG_PATH)

DOC_MD = """
### shardforge_daily

One run per `dt` partition (`{{ ds }}`): the same stages as `shardforge run`.

| task | what | where it runs |
|---|---|---|
| `prepare` | load the config, zip the project for `--py-files`, write Spark properties | worker |
| `ingest`, `explode_clean` | `shardforge/spark_jobs.py` through `spark-submit`; `explode_clean` also links the dt's posts with every other dt's and rebuilds `documents` | `spark_default` |
| `validate_clean_posts` | Great Expectations gate over `clean_posts/dt=…` | worker |
| `images` | `pipelines/beam/images.py` (raw images → clean_images + quarantine) | `beam_runner` |
| `validate_clean_images` | gate over `clean_images/dt=…` (size, labels, byte lengths) | worker |
| `encode` | `pipelines/beam/encode.py` (documents of every dt → TFRecord shards) | `beam_runner` |
| `validate_dataset` | gate over the shards: counts, then decoded examples | worker |
| `drift_dataset`, `drift_images` | drift gate: the version's `statistics.json` against the previous version's, eval vs train (thresholds: `validation.drift`) | worker |
| `encode_images` | `pipelines/beam/encode.py --dataset images` (clean_images → image shards) | `beam_runner` |
| `train_<model>` | `torchrun -m airflow_dags.train_entry <model>`; after its dataset and the model its `init_from` names | pool `gpu` |
| `report` | `reports/<run_id>/summary.json` and `report.html` | worker |

A failed gate fails its task at once (no retries) with the failed expectation and its
column; Data Docs are under `reports/<run_id>/data_docs/`. Every output is keyed by `dt`
or by the run id `shardforge_daily-<dt>`, so re-running a date replaces its own outputs.
Backfills: runs go one at a time (`max_active_runs=1`) in any order; the documents depend only
on which dts exist, so dates run out of order give the documents of an in-order run.

**Connections**: `spark_default` (host `local[2]` here, `yarn` with extra
`{"deploy-mode": "cluster", "queue": …}` in production). **Pools**: `gpu`.
"""

def _params(config: str, models: list[str]) -> dict[str, Param]:
    return {
        "config": Param(config, type="string", description="config YAML on the workers"),
        "lake": Param(None, type=["null", "string"],
                      description="lake root URI (default: lake.root of the config)"),
        "spark_profile": Param("local", enum=["local", "yarn"],
                               description="as `shardforge submit spark --profile`"),
        "beam_runner": Param("DirectRunner", type="string",
                             description="Beam runner of images and encode (options: beam.options of the config)"),
        "device": Param("auto", enum=["auto", "cpu", "cuda"], description="training device"),
        "nproc_per_node": Param(1, type="integer", minimum=1, description="torchrun processes"),
        "models": Param(models, type="array", items={"type": "string", "enum": models or [""]},
                        description="models to train (the others' tasks are skipped)"),
    }


DEFAULT_ARGS = {
    "owner": "shardforge",
    "retries": int(os.environ.get("SHARDFORGE_DAG_RETRIES", "2")),
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(hours=1),
}


def _prepared(key: str) -> str:
    """A template for one value that ``prepare`` returned."""
    return "{{ ti.xcom_pull(task_ids='prepare')['" + key + "'] }}"


def _spark_job(stage: Stage) -> SparkSubmitOperator:
    return SparkSubmitOperator(
        task_id=stage.name,
        conn_id="spark_default",
        application=str(SPARK_APPLICATION),
        py_files=_prepared("pyfiles"),
        properties_file=_prepared("properties"),
        name=_prepared("app_name") + f"-{stage.name}",
        application_args=[stage.name, "--config", _prepared("job_config"), "--lake",
                          _prepared("lake"), "--dt", "{{ ds }}"],
    )


def _beam_pipeline(stage: Stage) -> BeamPythonOperator:
    """A Beam pipeline module run with its ``run(argv)`` flags on the ``beam_runner`` param."""
    module = importlib.util.find_spec(stage.launch["module"])
    return BeamPythonOperator(
        task_id=stage.name,
        py_file=str(module.origin),
        py_interpreter=sys.executable,
        runner="{{ params.beam_runner }}",
        pipeline_options={"config": _prepared("config"), "lake": _prepared("lake"),
                          "dt": "{{ ds }}", **stage.launch["options"]},
    )


def _run_gate(gate: str) -> list[dict]:
    """A validation stage in the worker; a failed suite fails the task without retries."""
    from airflow.sdk.exceptions import AirflowFailException

    ctx = get_current_context()
    prepared = ctx["ti"].xcom_pull(task_ids="prepare")
    try:
        return tasks.run_gate(gate, config=prepared["config"], lake=prepared["lake"],
                              dt=ctx["ds"], run_id=prepared["run_id"])
    except tasks.GateFailed as exc:  # bad data does not get better on a retry
        raise AirflowFailException(str(exc)) from exc


def _gate(stage: Stage) -> PythonOperator:
    return PythonOperator(task_id=stage.name, python_callable=_run_gate,
                          op_kwargs={"gate": stage.launch["gate"]})


def _run_drift(dataset: str) -> dict:
    """A drift gate in the worker; a crossed threshold fails the task without retries."""
    from airflow.sdk.exceptions import AirflowFailException

    from core.lake import Lake
    from pipelines.validate.drift import DriftFailed, run_drift_gate

    ctx = get_current_context()
    prepared = ctx["ti"].xcom_pull(task_ids="prepare")
    cfg = load_config(prepared["config"], lake_root=prepared["lake"])
    try:
        report = run_drift_gate(cfg, Lake(cfg.lake.root), dataset=dataset,
                                run_id=prepared["run_id"])
    except DriftFailed as exc:  # a shifted distribution does not come back on a retry
        raise AirflowFailException(str(exc)) from exc
    return report.to_dict()


def _drift(stage: Stage) -> PythonOperator:
    return PythonOperator(task_id=stage.name, python_callable=_run_drift,
                          op_kwargs={"dataset": stage.launch["drift"]})


def _train(stage: Stage, cfg: ShardforgeConfig) -> BashOperator:
    model = stage.launch["model"]
    run = ("torchrun --standalone --nproc_per_node={{ params.nproc_per_node }}"
           f" -m airflow_dags.train_entry {model}"
           f" --config {_prepared('config')} --lake {_prepared('lake')}"
           f" --run-id {_prepared('run_id')} --device {{{{ params.device }}}}")
    skip = f"echo 'train {model}: not in params.models, skipped'; exit 99"
    # A model that starts from another's checkpoint runs when that task succeeded or was
    # skipped (not in params.models: it then starts from that model's latest run).
    return BashOperator(task_id=stage.name, pool="gpu",
                        bash_command=f"{{% if '{model}' in params.models %}}{run}{{% else %}}{skip}{{% endif %}}",
                        trigger_rule=(TriggerRule.NONE_FAILED if cfg.init_from_model(model)
                                      else TriggerRule.ALL_SUCCESS))


def _write_report(gates: list[str]) -> dict:
    """summary.json + report.html under reports/<run_id>/ (runs when training was skipped)."""
    ctx = get_current_context()
    prepared = ctx["ti"].xcom_pull(task_ids="prepare")
    results = [r for gate in gates for r in (ctx["ti"].xcom_pull(task_ids=gate) or [])]
    return tasks.write_run_report(config=prepared["config"], lake=prepared["lake"], dt=ctx["ds"],
                                  run_id=prepared["run_id"], gates=results)


def _report(stage: Stage, gates: list[str]) -> PythonOperator:
    return PythonOperator(task_id=stage.name, python_callable=_write_report,
                          op_kwargs={"gates": gates}, trigger_rule=TriggerRule.NONE_FAILED)


def build_dag(config: str) -> DAG:
    """The DAG of ``config``'s declared stages (see the module docstring)."""
    cfg = load_config(config)
    stage_list = declared_stages(cfg)
    with DAG(
        dag_id=DAG_ID,
        schedule="@daily",
        start_date=datetime(2026, 11, 1),
        catchup=False,
        # One run at a time: the documents rebuild reads and rewrites every dt's dedup tables
        # (and the local profile's embedded Derby metastore takes one Spark at a time). The
        # order of runs does not matter: backfilled dates give the documents of an in-order run.
        max_active_runs=1,
        params=_params(config, sorted(cfg.models)),
        default_args=DEFAULT_ARGS,
        doc_md=DOC_MD,
        tags=["shardforge"],
    ) as built:

        @task
        def prepare() -> dict:
            """Load the config and build what the Spark tasks ship (see ``tasks.prepare``)."""
            ctx = get_current_context()
            p = ctx["params"]
            return tasks.prepare(config=p["config"], lake=p["lake"], profile=p["spark_profile"],
                                 run_id=tasks.lake_run_id(DAG_ID, ctx["ds"]))

        prepared = prepare()
        gates = [s.name for s in stage_list if s.engine == "great_expectations"]
        operators = {}
        for stage in stage_list:
            if stage.engine == "spark":
                operators[stage.name] = _spark_job(stage)
            elif stage.engine == "beam":
                operators[stage.name] = _beam_pipeline(stage)
            elif stage.engine == "great_expectations":
                operators[stage.name] = _gate(stage)
            elif stage.engine == "torch":
                operators[stage.name] = _train(stage, cfg)
            elif "drift" in stage.launch:
                operators[stage.name] = _drift(stage)
            elif stage.name == "report":
                operators[stage.name] = _report(stage, gates)
            else:
                raise ValueError(f"stage {stage.name}: no operator for engine {stage.engine!r}")
            upstream = [operators[a] for a in stage.after] or [prepared]
            upstream >> operators[stage.name]
    return built


dag = build_dag(CONFIG)
