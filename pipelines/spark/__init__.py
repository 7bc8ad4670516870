"""Spark/Hive jobs: ingest, explode, clean. Logic in ``build_*`` functions, I/O in ``run_*``."""
