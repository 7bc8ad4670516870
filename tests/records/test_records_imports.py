"""records/ must run on GPU hosts without TensorFlow, Spark or Beam, and beside TF."""

import ast
import pathlib
import subprocess
import sys
import textwrap

import pytest

RECORDS = pathlib.Path(__file__).resolve().parents[2] / "records"
ROOT = str(RECORDS.parent)
FORBIDDEN = ("tensorflow", "pyspark", "apache_beam")


def _run(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={"PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3",
                                 "PATH": "/usr/bin:/bin"})


def test_no_module_imports_a_forbidden_package_statically():
    for path in RECORDS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def test_importing_every_module_loads_no_forbidden_package():
    modules = sorted(f"records.{p.stem}" for p in RECORDS.glob("*.py") if p.stem != "__init__")
    proc = _run(f"""
        import importlib, sys
        for m in {modules!r}:
            importlib.import_module(m)
        import records
        records.RecordDataset
        bad = sorted(m for m in sys.modules if m.split(".")[0] in {FORBIDDEN!r})
        print("LOADED", len({modules!r}), "BAD", bad)
    """)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert f"LOADED {len(modules)} BAD []" in out


TF_FIRST = """
    import tensorflow as tf
    from records import tfproto
    from records.example_codec import decode_example, encode_example
"""
OURS_FIRST = """
    from records import tfproto
    from records.example_codec import decode_example, encode_example
    import tensorflow as tf
"""
CHECK = """
    data = encode_example({"a": [1, 2], "b": "x"})
    theirs = tf.train.Example.FromString(data)
    assert list(theirs.features.feature["a"].int64_list.value) == [1, 2]
    back = decode_example(theirs.SerializeToString())
    assert back["a"].tolist() == [1, 2] and back["b"] == [b"x"]
    assert tfproto.Example.DESCRIPTOR.full_name == "shardforge.tfproto.Example"
    assert tf.train.Example.DESCRIPTOR.full_name == "tensorflow.Example"
    print("COEXIST OK")
"""


@pytest.mark.tf
def test_our_protos_coexist_with_tensorflow_in_either_order():
    pytest.importorskip("tensorflow")
    procs = [_run(TF_FIRST + CHECK), _run(OURS_FIRST + CHECK)]  # run both orders in parallel
    for proc in procs:
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0 and "COEXIST OK" in out, out
