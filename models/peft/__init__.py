"""Parameter-efficient fine-tuning of a trained :class:`~models.lm.DecoderLM`.

Three kinds (``TrainConfig.peft = {kind: ..., ...}``, typed in :mod:`models.peft_config`):

- ``lora`` (:mod:`models.peft.lora`): low-rank updates ``(alpha/r) B A`` on the target
  Linears (attention ``qkv``/``proj`` by default); mergeable into the weights.
- ``adapter`` (:mod:`models.peft.adapter`): Houlsby bottlenecks after attention and MLP.
- ``prefix`` (:mod:`models.peft.prefix`): learned per-layer key/value prefixes, from an
  MLP reparameterisation while training, fixed afterwards.

The base weights are frozen; LoRA and adapters start as the base model exactly. A PEFT
training run (:mod:`models.peft.run`, called by :class:`~models.task_lm.LMTask`)
checkpoints only the trainable tensors plus a reference (URI and sha256) to the base
checkpoint; :func:`load_peft_checkpoint` puts the two back together.

    model = apply_peft(base_model, {"kind": "lora", "rank": 8})
    state = trainable_state_dict(model)          # a few hundred KB for GPT-2 small
    model = load_peft_checkpoint("lake/models/lora/run-1")   # base + LoRA, eval mode
"""

from models.peft.adapter import Adapter
from models.peft.apply import (
    apply_peft,
    load_peft,
    merge_peft,
    peft_tensor_names,
    trainable_state_dict,
)
from models.peft.lora import LoRALinear, merge_lora
from models.peft.prefix import PrefixEncoder, StaticPrefix, merge_prefix
from models.peft.run import load_peft_checkpoint

__all__ = ["Adapter", "LoRALinear", "PrefixEncoder", "StaticPrefix", "apply_peft",
           "load_peft", "load_peft_checkpoint", "merge_lora", "merge_peft", "merge_prefix",
           "peft_tensor_names", "trainable_state_dict"]
