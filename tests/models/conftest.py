"""Fixtures for models/ tests: an in-memory TokenBatchSource and a learnable toy corpus."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
import torch


class ListSource:
    """A TokenBatchSource over a list of documents, shaped like records.reader.RecordDataset."""

    def __init__(self, docs: list[list[int]], *, batch_size: int, pad_id: int = 0, seed: int = 0):
        self.docs, self.batch_size, self.pad_id, self.seed = docs, batch_size, pad_id, seed
        self.epoch = 0
        self.epochs_seen: list[int] = []
        self.batches_read = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epochs_seen.append(epoch)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order = list(range(len(self.docs)))
        random.Random(self.seed * 1000 + self.epoch).shuffle(order)
        for start in range(0, len(order), self.batch_size):
            docs = [self.docs[i] for i in order[start : start + self.batch_size]]
            width = max(len(d) for d in docs)
            ids = torch.full((len(docs), width), self.pad_id, dtype=torch.long)
            for row, doc in enumerate(docs):
                ids[row, : len(doc)] = torch.tensor(doc, dtype=torch.long)
            self.batches_read += 1
            yield {
                "input_ids": ids,
                "input_ids_lengths": torch.tensor([len(d) for d in docs]),
                "topic": torch.zeros(len(docs), 1, dtype=torch.long),
            }

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches_read": self.batches_read}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.batches_read = state["epoch"], state["batches_read"]


def counting_docs(n_docs: int, vocab_size: int, seed: int = 0) -> list[list[int]]:
    """Documents that count upwards (mod vocab, skipping eos 0): next token = this + 1."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        start, length = rng.randrange(1, vocab_size), rng.randrange(4, 40)
        docs.append([1 + (start + i - 1) % (vocab_size - 1) for i in range(length)])
    return docs


@pytest.fixture
def list_source():
    """Factory: ``list_source(docs, batch_size=4) -> ListSource``."""
    return ListSource


@pytest.fixture
def toy_docs():
    """Factory: ``toy_docs(n_docs, vocab_size, seed=0) -> list[list[int]]``."""
    return counting_docs


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from threads; on a shared 2-core box they only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
