"""An Airflow DAG that keeps Almanac's online store fresh: every 5 minutes it runs
`almanac run-due`, which materializes each view whose `materialize_every` says it is due
and exits 1 if one failed (Airflow then marks the task failed and retries it). Several
Airflow workers, or an `almanac schedule` beside it, never run one view at once: each
view runs under a lease in the registry. Copy it into your DAGs folder and set REPO."""

from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

REPO = "/srv/feature-repo"  # the feature repo (almanac.yaml, definitions)

with DAG(
    dag_id="almanac_materialize",
    start_date=datetime(2026, 1, 1),
    schedule=timedelta(minutes=5),
    catchup=False,  # run-due catches up by itself: it reads the run history
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
) as dag:
    BashOperator(
        task_id="run_due",
        bash_command=f"almanac --repo {REPO} run-due",
    )
