"""HiveQL kept as files under ``pipelines/spark/sql/``, rendered and run through ``spark.sql``.

Identifiers (the database) are substituted as ``${name}`` after a strict check,
because Spark cannot bind identifiers as parameters; values (a dt) are bound as
named parameters ``:name`` by Spark itself, so they are never spliced into SQL.
"""

from __future__ import annotations

import re
from importlib import resources
from string import Template
from typing import Any

__all__ = ["SQL_DIR", "render", "run_sql_file", "statements"]

# Read as package data, so the files are found inside the --py-files zip of spark-submit too.
SQL_DIR = resources.files("pipelines.spark").joinpath("sql")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def render(name: str, **identifiers: str) -> str:
    """Read ``sql/<name>.sql`` and substitute the checked identifiers."""
    for key, value in identifiers.items():
        if not _IDENTIFIER.match(value):
            raise ValueError(f"{name}.sql: {key}={value!r} is not a SQL identifier")
    text = (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")
    return Template(text).substitute(identifiers)


def statements(sql: str) -> list[str]:
    """Split a rendered file into statements (our files keep ';' out of literals)."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [part.strip() for part in "\n".join(lines).split(";") if part.strip()]


def run_sql_file(spark, name: str, *, args: dict[str, Any] | None = None, **identifiers: str):
    """Run every statement of ``sql/<name>.sql``; returns the last statement's DataFrame."""
    result = None
    for statement in statements(render(name, **identifiers)):
        bound = {k: v for k, v in (args or {}).items() if f":{k}" in statement}
        result = spark.sql(statement, args=bound or None)
    return result
