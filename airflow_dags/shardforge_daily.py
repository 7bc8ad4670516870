"""``shardforge_daily``: one DAG run per ``dt`` partition, raw feeds → shards → models → report.

A thin schedule over the entry points the ``shardforge`` CLI calls (see ``doc_md`` below).
Parsing imports only Airflow, the project's config module (pydantic, PyYAML) and
:mod:`airflow_dags.tasks`, whose functions import the engines when they run.

Environment read at parse time:
    SHARDFORGE_CONFIG: the config whose ``models:`` become ``train_<model>`` tasks and the
        default of the ``config`` param (default: the embedded ``conf/sample.yaml``).
    SHARDFORGE_DAG_RETRIES: retries of each task (default 2; exponential backoff).
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Param, TriggerRule, get_current_context, task

from airflow_dags import tasks
from airflow_dags.beam_compat import BeamPythonOperator
from core.config import DEFAULT_CONFIG_PATH, load_config

__all__ = ["dag"]

DAG_ID = "shardforge_daily"
PROJECT_ROOT = Path(tasks.__file__).resolve().parents[1]
SPARK_APPLICATION = PROJECT_ROOT / "shardforge" / "spark_jobs.py"
BEAM_PIPELINE = PROJECT_ROOT / "pipelines" / "beam" / "encode.py"
BEAM_IMAGES = PROJECT_ROOT / "pipelines" / "beam" / "images.py"
CONFIG = os.environ.get("SHARDFORGE_CONFIG") or str(DEFAULT_CONFIG_PATH)
_CONFIG = load_config(CONFIG)
MODEL_KINDS = {name: entry.kind for name, entry in _CONFIG.models.items()}
MODELS = sorted(MODEL_KINDS)
# model -> the model its train.init_from names (Medusa-1 heads on a trained lm): trains after it
INIT_FROM = {name: _CONFIG.init_from_model(name) for name in MODELS if _CONFIG.init_from_model(name)}

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
| `encode_images` | `pipelines/beam/encode.py --dataset images` (clean_images → image shards) | `beam_runner` |
| `encode` | `pipelines/beam/encode.py` (documents of every dt → TFRecord shards) | `beam_runner` |
| `validate_dataset` | gate over the shards: counts, then decoded examples | worker |
| `train_<model>` | `torchrun -m airflow_dags.train_entry <model>`; after the model its `init_from` names | pool `gpu` |
| `report` | `reports/<run_id>/summary.json` and `report.html` | worker |

A failed gate fails its task at once (no retries) with the failed expectation and its
column; Data Docs are under `reports/<run_id>/data_docs/`. Every output is keyed by `dt`
or by the run id `shardforge_daily-<dt>`, so re-running a date replaces its own outputs.
Backfills: runs go one at a time (`max_active_runs=1`) in any order; the documents depend only
on which dts exist, so dates run out of order give the documents of an in-order run.

**Connections**: `spark_default` (host `local[2]` here, `yarn` with extra
`{"deploy-mode": "cluster", "queue": …}` in production). **Pools**: `gpu`.
"""

PARAMS = {
    "config": Param(CONFIG, type="string", description="config YAML on the workers"),
    "lake": Param(None, type=["null", "string"],
                  description="lake root URI (default: lake.root of the config)"),
    "spark_profile": Param("local", enum=["local", "yarn"],
                           description="as `shardforge submit spark --profile`"),
    "beam_runner": Param("DirectRunner", type="string",
                         description="Beam runner of images and encode (options: beam.options of the config)"),
    "device": Param("auto", enum=["auto", "cpu", "cuda"], description="training device"),
    "nproc_per_node": Param(1, type="integer", minimum=1, description="torchrun processes"),
    "models": Param(MODELS, type="array", items={"type": "string", "enum": MODELS or [""]},
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


def _spark_job(job: str) -> SparkSubmitOperator:
    return SparkSubmitOperator(
        task_id=job,
        conn_id="spark_default",
        application=str(SPARK_APPLICATION),
        py_files=_prepared("pyfiles"),
        properties_file=_prepared("properties"),
        name=_prepared("app_name") + f"-{job}",
        application_args=[job, "--config", _prepared("job_config"), "--lake", _prepared("lake"),
                          "--dt", "{{ ds }}"],
    )


def _beam_pipeline(task_id: str, py_file: Path, **options: str) -> BeamPythonOperator:
    """A Beam pipeline module run with its ``run(argv)`` flags on the ``beam_runner`` param."""
    return BeamPythonOperator(
        task_id=task_id,
        py_file=str(py_file),
        py_interpreter=sys.executable,
        runner="{{ params.beam_runner }}",
        pipeline_options={"config": _prepared("config"), "lake": _prepared("lake"),
                          "dt": "{{ ds }}", **options},
    )


def _train_command(model: str) -> str:
    run = ("torchrun --standalone --nproc_per_node={{ params.nproc_per_node }}"
           f" -m airflow_dags.train_entry {model}"
           f" --config {_prepared('config')} --lake {_prepared('lake')}"
           f" --run-id {_prepared('run_id')} --device {{{{ params.device }}}}")
    skip = f"echo 'train {model}: not in params.models, skipped'; exit 99"
    return f"{{% if '{model}' in params.models %}}{run}{{% else %}}{skip}{{% endif %}}"


with DAG(
    dag_id=DAG_ID,
    schedule="@daily",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    # One run at a time: the documents rebuild reads and rewrites every dt's dedup tables (and
    # the local profile's embedded Derby metastore takes one Spark at a time). The order of
    # runs does not matter: backfilled dates give the documents of an in-order run.
    max_active_runs=1,
    params=PARAMS,
    default_args=DEFAULT_ARGS,
    doc_md=DOC_MD,
    tags=["shardforge"],
) as dag:

    @task
    def prepare() -> dict:
        """Load the config and build what the Spark tasks ship (see ``tasks.prepare``)."""
        ctx = get_current_context()
        p = ctx["params"]
        return tasks.prepare(config=p["config"], lake=p["lake"], profile=p["spark_profile"],
                             run_id=tasks.lake_run_id(DAG_ID, ctx["ds"]))

    def _gate(run):
        from airflow.sdk.exceptions import AirflowFailException

        try:
            return run()
        except tasks.GateFailed as exc:  # bad data does not get better on a retry
            raise AirflowFailException(str(exc)) from exc

    @task
    def validate_clean_posts(prepared: dict) -> list[dict]:
        """Gate: clean_posts of this dt (lengths, topics, ids) before anything is encoded."""
        ds = get_current_context()["ds"]
        return _gate(lambda: tasks.validate_clean_posts(
            config=prepared["config"], lake=prepared["lake"], dt=ds, run_id=prepared["run_id"]))

    @task
    def validate_clean_images(prepared: dict) -> list[dict]:
        """Gate: clean_images of this dt (size, labels, pixel and mask byte lengths)."""
        ds = get_current_context()["ds"]
        return _gate(lambda: tasks.validate_clean_images(
            config=prepared["config"], lake=prepared["lake"], dt=ds, run_id=prepared["run_id"]))

    @task
    def validate_dataset(prepared: dict) -> list[dict]:
        """Gate: the encoded shards (counts vs manifest, token ids, labels) before training."""
        return _gate(lambda: tasks.validate_dataset(
            config=prepared["config"], lake=prepared["lake"], run_id=prepared["run_id"]))

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def report(prepared: dict, clean_gate: list[dict], images_gate: list[dict],
               dataset_gate: list[dict]) -> dict:
        """summary.json + report.html under reports/<run_id>/ (runs when training was skipped)."""
        ds = get_current_context()["ds"]
        return tasks.write_run_report(config=prepared["config"], lake=prepared["lake"], dt=ds,
                                      run_id=prepared["run_id"],
                                      gates=clean_gate + images_gate + dataset_gate)

    prepared = prepare()
    ingest, explode_clean = _spark_job("ingest"), _spark_job("explode_clean")
    clean_gate = validate_clean_posts(prepared)
    encode = _beam_pipeline("encode", BEAM_PIPELINE)
    images = _beam_pipeline("images", BEAM_IMAGES)
    images_gate = validate_clean_images(prepared)
    encode_images = _beam_pipeline("encode_images", BEAM_PIPELINE, dataset="images")
    dataset_gate = validate_dataset(prepared)
    # A model that starts from another's checkpoint runs when that task succeeded or was
    # skipped (not in params.models: it then starts from that model's latest run).
    trains = {model: BashOperator(task_id=f"train_{model}", pool="gpu",
                                  bash_command=_train_command(model),
                                  trigger_rule=(TriggerRule.NONE_FAILED if model in INIT_FROM
                                                else TriggerRule.ALL_SUCCESS))
              for model in MODELS}
    done = report(prepared, clean_gate, images_gate, dataset_gate)

    prepared >> ingest >> explode_clean >> clean_gate >> encode >> dataset_gate
    prepared >> images >> images_gate >> encode_images >> done
    dataset_gate >> done
    for model, train in trains.items():
        # The LM trains on the posts dataset, the vision models on the image dataset.
        (encode_images if MODEL_KINDS[model] != "lm" else dataset_gate) >> train >> done
    for model, parent in INIT_FROM.items():
        trains[parent] >> trains[model]  # same run id: it starts from this run's checkpoint
