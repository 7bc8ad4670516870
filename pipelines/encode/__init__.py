"""Encoding clean rows into dataset shards, whichever engine runs it.

``shards`` plans and writes one task's shards (features → ``tf.Example`` → TFRecord) and
counts its rows' statistics, and ``commit`` turns the tasks' reported attempts into one
committed dataset version with its manifest and ``statistics.json``. The Beam (:mod:`pipelines.beam.encode`) and Spark (:mod:`pipelines.spark.encode`)
jobs only read rows, run these per task and commit on the driver, so both engines write
byte-identical datasets.
"""
