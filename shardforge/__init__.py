"""shardforge: raw corpora on a lake → Spark/Beam cleaning → TFRecord shards → PyTorch training."""

__version__ = "0.1.0"
