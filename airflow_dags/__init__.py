"""Airflow DAGs: thin schedules over the same entry points the ``shardforge`` CLI calls.

DAG files import nothing heavy at module level (Airflow parses them every few seconds);
each task calls a function of ``shardforge.stages`` or a spark-submit / Beam operator.
"""
