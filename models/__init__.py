"""models: the model zoo and its trainer. Reads data only through ``records/``.

Never imports tensorflow, pyspark or apache_beam: a GPU host has PyTorch and numpy.
"""

from models.attention import probe_backend, sdpa_backend
from models.checkpoint import load_checkpoint, restore_rng_state, save_checkpoint
from models.data import TokenBatchSource, loop_epochs, pack_documents
from models.lm import DecoderLM, LMConfig
from models.train import TrainConfig, TrainResult, cosine_lr, train_lm, train_lm_on_source

__all__ = [
    "DecoderLM",
    "LMConfig",
    "TokenBatchSource",
    "TrainConfig",
    "TrainResult",
    "cosine_lr",
    "load_checkpoint",
    "loop_epochs",
    "pack_documents",
    "probe_backend",
    "restore_rng_state",
    "save_checkpoint",
    "sdpa_backend",
    "train_lm",
    "train_lm_on_source",
]
