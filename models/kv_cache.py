"""A key/value cache for incremental decoding of :class:`~models.lm.DecoderLM`.

The cache holds, per layer, the rotated keys and the values of every token already
processed, preallocated up to ``max_len`` positions. A forward over new tokens writes
their keys/values at ``[length, length + T)`` and attends to ``[0, length + T)``; the
model then calls :meth:`KVCache.advance`. Speculative decoding rolls rejected tokens
back with :meth:`KVCache.truncate`: it only moves ``length``, and later writes
overwrite the stale entries.

Recurrent mixers (linear attention, S4D, Mamba-2) keep no keys/values: each keeps its
state in ``states[layer]`` (None until the first forward), replaced as tokens arrive.
A state cannot be rolled back, so :meth:`KVCache.truncate` refuses to go back while a
layer holds one (speculative decoding is for attention-like mixers only).

Example::

    cache = model.new_kv_cache()
    h = model.hidden_states(prompt, cache)      # prefill: cache.length == T
    h = model.hidden_states(next_tok, cache)    # one more position
    cache.truncate(cache.length - 1)            # forget it again
"""

from __future__ import annotations

import torch

__all__ = ["KVCache"]


class KVCache:
    """Per-layer key/value buffers ``(B, nh, max_len, hs)``, allocated on first use,
    and per-layer recurrent states (``states``, whatever the layer's mixer keeps).

    Args:
        n_layer: number of attention layers that write to the cache.
        max_len: most positions the cache can hold (the model's block_size).

    Raises:
        ValueError: non-positive sizes.
    """

    def __init__(self, n_layer: int, max_len: int) -> None:
        for name, value in (("n_layer", n_layer), ("max_len", max_len)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"KVCache {name} must be a positive int, got {value!r}")
        self.n_layer = n_layer
        self.max_len = max_len
        self.length = 0  # positions [0, length) hold valid keys/values
        self._k: list[torch.Tensor | None] = [None] * n_layer
        self._v: list[torch.Tensor | None] = [None] * n_layer
        # Recurrent mixers' states after the first `length` tokens; None = none yet.
        self.states: list = [None] * n_layer

    def check_room(self, n_new: int) -> None:
        """Raises ValueError unless ``n_new`` more positions fit."""
        if self.length + n_new > self.max_len:
            raise ValueError(
                f"KVCache holds {self.length} of {self.max_len} positions; "
                f"{n_new} more do not fit"
            )

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stores k, v (B, nh, T, hs) at ``[length, length + T)``; returns all keys/values.

        ``v`` may have another width than ``k`` (B, nh, T, hv), as GAU's values do.

        Returns:
            ``(keys, values)``, each (B, nh, length + T, hs or hv): a view into the buffers.
        """
        B, nh, T, hs = k.shape
        buf_k, buf_v = self._k[layer], self._v[layer]
        if (buf_k is None or buf_k.shape[0] != B or buf_k.dtype != k.dtype
                or buf_v.shape[-1] != v.shape[-1]):
            buf_k = k.new_zeros(B, nh, self.max_len, hs)  # (B, nh, max_len, hs)
            buf_v = v.new_zeros(B, nh, self.max_len, v.shape[-1])  # (B, nh, max_len, hv)
            self._k[layer], self._v[layer] = buf_k, buf_v
        end = self.length + T
        buf_k[:, :, self.length : end] = k
        buf_v[:, :, self.length : end] = v
        return buf_k[:, :, :end], buf_v[:, :, :end]

    def attn_mask(self, T: int, device: torch.device) -> torch.Tensor | None:
        """Boolean mask (T, length + T) for T new queries, or None where SDPA needs none.

        Query i sits at absolute position ``length + i`` and may attend to keys at
        positions ``<= length + i``. With an empty cache the caller uses ``is_causal``;
        a single query may attend to everything cached.
        """
        if self.length == 0 or T == 1:
            return None
        keys = torch.arange(self.length + T, device=device)  # (length + T,)
        queries = self.length + torch.arange(T, device=device)  # (T,)
        return keys[None, :] <= queries[:, None]  # (T, length + T), True = attend

    def advance(self, n: int) -> None:
        """Marks ``n`` more positions as valid (called by the model after all layers)."""
        self.check_room(n)
        self.length += n

    def truncate(self, length: int) -> None:
        """Forgets every position at or after ``length`` (rollback of rejected tokens).

        Raises:
            ValueError: ``length`` is negative or beyond the valid positions, or it goes
                back while a recurrent layer holds a state (which cannot be rolled back).
        """
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a KVCache of length {self.length} to {length}")
        if length < self.length:
            held = [i for i, state in enumerate(self.states) if state is not None]
            if held:
                raise ValueError(
                    f"cannot truncate a KVCache from {self.length} to {length}: layer {held[0]} "
                    "holds a recurrent state, which cannot be rolled back"
                )
        self.length = length
