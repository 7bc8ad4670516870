"""models: the model zoo and its one trainer. Reads data only through ``records/``.

Never imports tensorflow, pyspark or apache_beam: a GPU host has PyTorch and numpy.
This package file imports nothing, so the torch-free parts load without torch:

- :mod:`models.kinds`: the registry of model kinds, ``build_configs`` (config-file
  entries -> typed configs) and ``train_model`` (imports the trainer lazily);
- :mod:`models.train_config`, :mod:`models.lm_config`, :mod:`models.vqvae_config`,
  :mod:`models.efficientnet_config`: the typed configs (checked field by field,
  :mod:`models.config_fields`).

With torch: :mod:`models.trainer` (the one training loop) and the kinds' tasks
(:mod:`models.task_lm`, :mod:`models.task_vision`); the models (:mod:`models.lm` with
:mod:`models.mtp` and :mod:`models.medusa`, :mod:`models.vqvae`,
:mod:`models.efficientnet`), decoding (:mod:`models.generate`, :mod:`models.kv_cache`),
the VQ-VAE token export (:mod:`models.vq_tokens`) and the loop's parts
(:mod:`models.train_common`, :mod:`models.data`, :mod:`models.vision_data`,
:mod:`models.checkpoint`, :mod:`models.distributed`, :mod:`models.runlog`,
:mod:`models.warm_start`, :mod:`models.attention`).
"""
