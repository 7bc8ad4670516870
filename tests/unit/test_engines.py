"""A missing engine names the extra that installs it."""

from __future__ import annotations

import sys

import pytest

from core.engines import MissingEngineError, require


@pytest.mark.parametrize(("module", "extra"), [("pyspark", "spark"), ("apache_beam", "beam"),
                                               ("tensorflow", "tf"), ("airflow", "airflow")])
def test_missing_engine_names_its_extra(monkeypatch, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(MissingEngineError, match=rf"shardforge ingest: needs {module}.*pip install 'shardforge\[{extra}\]'"):
        require(module, for_what="shardforge ingest")


def test_present_engine_is_returned():
    assert require("json", for_what="x").dumps([1]) == "[1]"


def test_cli_reports_a_missing_engine_with_exit_2(monkeypatch, tmp_path, capsys):
    from shardforge.cli import main

    monkeypatch.setitem(sys.modules, "pyspark", None)
    assert main(["sample", "--lake", str(tmp_path), "--posts", "20", "--images", "6"]) == 0
    assert main(["ingest", "--lake", str(tmp_path)]) == 2
    assert "pip install 'shardforge[spark]'" in capsys.readouterr().err
