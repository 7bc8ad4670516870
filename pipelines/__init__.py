"""Cleaning stage: Spark/Hive jobs and Beam pipelines over the lake."""
