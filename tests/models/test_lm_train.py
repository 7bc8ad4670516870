"""The LM through the one training loop (models.trainer + models.task_lm) on in-memory sources:
LR schedule, config checks, a real (tiny) training run, evaluation."""

from __future__ import annotations

import json
import math

import pytest
import torch

import models.task_lm as task_lm
from models.checkpoint import load_checkpoint
from models.lm import DecoderLM, LMConfig
from models.task_lm import LMTask
from models.train_config import TrainConfig, cosine_lr
from models.trainer import train_on_source

V = 64
SHA = "cd" * 32
MODEL = LMConfig.preset("tiny", vocab_size=V, block_size=32)


def tiny_train(**overrides) -> TrainConfig:
    base = dict(
        steps=12, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=2, log_every=5, device="cpu"
    )
    return TrainConfig(**{**base, **overrides})


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 1.0 / 10),  # warmup: (step + 1) / warmup_steps of the peak
        (9, 1.0),  # end of warmup: peak
        (10, 1.0),  # cosine starts at the peak
        (55, 0.1 + 0.5 * (1 + math.cos(math.pi * 0.5)) * 0.9),  # halfway down
        (100, 0.1),  # floor
        (500, 0.1),
    ],
)
def test_cosine_lr(step, expected):
    got = cosine_lr(step, lr=1.0, min_lr=0.1, warmup_steps=10, total_steps=100)
    assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    "overrides, error",
    [
        (dict(steps=0), ValueError),
        (dict(steps=2.0), TypeError),
        (dict(lr="3e-4"), TypeError),  # YAML 1.1 reads 3e-4 as a string
        (dict(lr=1e-3, min_lr=1e-2), ValueError),
        (dict(device="tpu"), ValueError),
        (dict(precision="fp4"), ValueError),
        (dict(compile="yes"), TypeError),
        (dict(block_size=0), ValueError),
        (dict(grad_clip=-1.0), ValueError),
        (dict(ckpt_every=-1), ValueError),
        (dict(num_workers=1.5), TypeError),
        (dict(attention="xformers"), ValueError),
        (dict(peak_flops=0), ValueError),
        (dict(progress="yes"), TypeError),
        (dict(eval_every=-1), ValueError),
        (dict(image_size=32), ValueError),  # a vision field
        (dict(kind="gpt"), ValueError),
    ],
)
def test_bad_train_config_raises(overrides, error):
    with pytest.raises(error, match=next(iter(overrides))):  # the message names the field
        tiny_train(**overrides)


def run(tmp_path, list_source, toy_docs, name="run", docs=None, resume=False, eval_source=None,
        **overrides):
    source = list_source(docs if docs is not None else toy_docs(60, V), batch_size=4, seed=0)
    steps_seen = []
    result = train_on_source(
        LMTask(MODEL, tiny_train(**overrides)),
        source,
        out_uri=str(tmp_path / name),
        dataset_manifest_sha256=SHA,
        eval_source=eval_source,
        on_step=steps_seen.append,
        resume=resume,
    )
    return result, steps_seen, source


def test_training_learns_and_writes_metrics_and_checkpoint(tmp_path, list_source, toy_docs):
    result, steps_seen, source = run(tmp_path, list_source, toy_docs, steps=30, prefetch=0)
    assert result.final_loss < 0.6 * result.first_loss, result
    assert (result.device, result.precision, result.steps) == ("cpu", "fp32", 30)
    assert (result.examples, result.unit, result.kind) == (30 * 4 * 32, "tokens", "lm")
    assert result.extras == {"attention": result.extras["attention"], "init_from": None,
                             "freeze_backbone": False}
    assert result.extras["attention"] in {"flash", "math"}
    assert result.eval_metrics == {}  # no eval source: no evaluation
    assert [s["step"] for s in steps_seen] == list(range(1, 31))

    with open(result.metrics_uri) as f:
        lines = [json.loads(line) for line in f]
    assert [m["step"] for m in lines] == [1, 5, 10, 15, 20, 25, 30]
    assert lines[-1]["loss"] == result.final_loss and lines[0]["loss"] == result.first_loss
    assert all(m["tokens_per_s"] > 0 and m["loss_scale"] is None for m in lines)
    assert lines[0]["lr"] == pytest.approx(3e-3 / 2)  # first warmup step

    ckpt = load_checkpoint(result.checkpoint_uri)
    assert ckpt["step"] == 30 and ckpt["dataset_manifest_sha256"] == SHA
    assert ckpt["model_config"]["block_size"] == 32 and ckpt["train_config"]["steps"] == 30
    assert ckpt["reader"] == source.state_dict()  # no read-ahead: the live position
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["dataset_manifest_sha256"] == SHA and config["kind"] == "lm"
    assert all("eval" not in m for m in lines)


def test_same_seed_same_loss_other_seed_other_loss(tmp_path, list_source, toy_docs):
    a, _, _ = run(tmp_path, list_source, toy_docs, "a", steps=4)
    b, _, _ = run(tmp_path, list_source, toy_docs, "b", steps=4)
    c, _, _ = run(tmp_path, list_source, toy_docs, "c", steps=4, seed=7)
    assert a.final_loss == b.final_loss
    assert c.final_loss != a.final_loss
    sd_a = load_checkpoint(a.checkpoint_uri)["model"]
    sd_b = load_checkpoint(b.checkpoint_uri)["model"]
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


def test_small_dataset_loops_over_epochs(tmp_path, list_source, toy_docs):
    # 6 documents hold far fewer tokens than 6 steps x 4 x 33: the reader is re-read.
    _, _, source = run(tmp_path, list_source, toy_docs, docs=toy_docs(6, V), steps=6)
    assert source.epochs_seen[:3] == [0, 1, 2]


@pytest.mark.parametrize(
    "overrides, precision",
    [
        (dict(precision="bf16"), "bf16"),
        (dict(precision="fp16"), "fp16"),  # GradScaler path, on CPU here
        (dict(grad_accum=2, dropout_free=True), "fp32"),
    ],
)
def test_precisions_and_accumulation(tmp_path, list_source, toy_docs, overrides, precision):
    overrides.pop("dropout_free", None)
    result, steps_seen, _ = run(tmp_path, list_source, toy_docs, steps=3, **overrides)
    assert result.precision == precision and math.isfinite(result.final_loss)
    assert result.examples == 3 * overrides.get("grad_accum", 1) * 4 * 32
    scales = [s["loss_scale"] for s in steps_seen]
    if precision == "fp16":
        assert all(s is not None and s > 0 for s in scales)
        assert 0 <= result.skipped_steps <= 3
        assert load_checkpoint(result.checkpoint_uri)["scaler"]["scale"] == scales[-1]
    else:
        assert scales == [None] * 3 and result.skipped_steps == 0


@pytest.mark.parametrize(
    "model_overrides, train_overrides, match",
    [
        ({}, dict(block_size=64), "block_size"),  # longer than the model's 32
        ({}, dict(eos_id=V), "eos_id"),
        (dict(vocab_size=16), {}, "token ids"),  # the toy corpus uses ids up to 63
    ],
)
def test_mismatched_data_or_config_raises(
    tmp_path, list_source, toy_docs, model_overrides, train_overrides, match
):
    with pytest.raises(ValueError, match=match):
        model = LMConfig.preset("tiny", **{"vocab_size": V, "block_size": 32, **model_overrides})
        train_on_source(
            LMTask(model, tiny_train(steps=2, **train_overrides)),
            list_source(toy_docs(20, V), batch_size=4),
            out_uri=str(tmp_path / "bad"),
            dataset_manifest_sha256=SHA,
        )


class PartsLM(DecoderLM):
    """A DecoderLM that reports loss parts, as models/lm.py does with extra heads on."""

    def forward(self, idx, targets=None, **kwargs):
        logits, loss = super().forward(idx, targets, **kwargs)
        self.last_loss_parts = {"next_token": 1.5, "mtp_1": 2.5}
        return logits, loss


def test_metrics_hold_mfu_input_wait_and_loss_parts(tmp_path, list_source, toy_docs, monkeypatch):
    monkeypatch.setattr(task_lm, "DecoderLM", PartsLM)
    result, _, _ = run(tmp_path, list_source, toy_docs, steps=4, log_every=2, peak_flops=1e9)
    with open(result.metrics_uri) as f:
        lines = [json.loads(line) for line in f]
    assert [m["step"] for m in lines] == [1, 2, 4]
    per_token = DecoderLM(MODEL).estimate_flops_per_token(32)
    for m in lines:
        assert m["mfu"] == pytest.approx(m["tokens_per_s"] * per_token / 1e9)
        assert 0.0 <= m["input_wait"] < 1.0
        assert m["loss_parts"] == {"next_token": 1.5, "mtp_1": 2.5}
    assert lines[0]["elapsed_s"] < lines[1]["elapsed_s"] < lines[2]["elapsed_s"]


def test_without_peak_flops_mfu_is_null(tmp_path, list_source, toy_docs):
    result, steps_seen, _ = run(tmp_path, list_source, toy_docs, steps=2)
    assert [s["mfu"] for s in steps_seen] == [None, None]
    assert all(isinstance(v, float) for v in steps_seen[0].get("loss_parts", {}).values())


@pytest.mark.parametrize("progress, shown", [(True, True), (False, False), (None, False)])
def test_progress_bar_on_stderr(tmp_path, list_source, toy_docs, capsys, progress, shown):
    run(tmp_path, list_source, toy_docs, steps=2, progress=progress)  # None: stderr is no TTY
    assert ("2/2" in capsys.readouterr().err) == shown


def test_math_attention_is_pinned_when_asked(tmp_path, list_source, toy_docs):
    result, _, _ = run(tmp_path, list_source, toy_docs, steps=1, attention="math")
    assert result.extras["attention"] == "math" and result.details()["attention"] == "math"


def test_resume_needs_a_source_that_can_skip(tmp_path, list_source, toy_docs):
    with pytest.raises(ValueError, match="advance"):
        run(tmp_path, list_source, toy_docs, steps=1, resume=True)


@pytest.mark.parametrize("prefetch", [1, 3])
def test_prefetch_changes_nothing_but_reads_ahead(tmp_path, list_source, toy_docs, prefetch):
    inline, _, _ = run(tmp_path, list_source, toy_docs, "inline", steps=5, prefetch=0)
    ahead, _, source = run(tmp_path, list_source, toy_docs, "ahead", steps=5, prefetch=prefetch)
    assert ahead.final_loss == inline.final_loss
    saved = load_checkpoint(ahead.checkpoint_uri)
    assert saved["reader"] == load_checkpoint(inline.checkpoint_uri)["reader"]  # consumed only
    assert source.state_dict()["batches_read"] > saved["reader"]["batches_read"]  # read ahead


def lines_of(result) -> list[dict]:
    with open(result.metrics_uri) as f:
        return [json.loads(line) for line in f]


def test_evaluation_at_eval_every_and_at_the_end(tmp_path, list_source, toy_docs):
    held_out = list_source(toy_docs(12, V, seed=1), batch_size=4)  # ~13 windows of 33 tokens
    result, steps_seen, _ = run(tmp_path, list_source, toy_docs, steps=10, log_every=5,
                                eval_every=4, eval_source=held_out)
    lines = lines_of(result)
    assert [m["step"] for m in lines] == [1, 4, 5, 8, 10]  # eval steps get a line too
    evals = [m["eval"] for m in lines if "eval" in m]
    assert [e["step"] for e in evals] == [4, 8, 10]
    assert "eval" in steps_seen[3] and "eval" not in steps_seen[4]  # on_step sees it too
    last = result.eval_metrics
    assert last == evals[-1] and set(last) == {"step", "loss", "perplexity", "tokens"}
    assert last["perplexity"] == pytest.approx(math.exp(last["loss"]), rel=1e-12)
    assert evals[0]["loss"] > last["loss"]  # it learns the held-out counting documents too
    assert result.details()["eval"] == last

    # The reported loss is the mean next-token cross-entropy of the final weights over every
    # whole window of the split, recomputed here by hand.
    model = DecoderLM(MODEL)
    model.load_state_dict(load_checkpoint(result.checkpoint_uri)["model"])
    packer = task_lm.DocumentPacker(iter(list_source(toy_docs(12, V, seed=1), batch_size=4)),
                                    block_size=32, batch_size=1, eos_id=0, vocab_size=V)
    x, y = (torch.cat(t) for t in zip(*packer, strict=True))  # (N, 32) each
    with torch.no_grad():
        logits, _ = model.eval()(x)
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).item()
    assert last["tokens"] == y.numel() and y.shape[0] > 4  # a short last batch included
    assert last["loss"] == pytest.approx(expected, rel=1e-5)


def test_eval_batches_limits_the_evaluation(tmp_path, list_source, toy_docs):
    held_out = list_source(toy_docs(12, V, seed=1), batch_size=4)
    result, _, _ = run(tmp_path, list_source, toy_docs, steps=2, eval_batches=1,
                       eval_source=held_out)
    assert result.eval_metrics["tokens"] == 4 * 32  # one batch of batch_size windows
    assert result.eval_metrics["step"] == 2


def test_eval_of_a_split_without_a_whole_window_is_skipped(tmp_path, list_source, toy_docs):
    held_out = list_source([[1, 2, 3]], batch_size=4)  # 4 tokens: no window of 33
    result, _, _ = run(tmp_path, list_source, toy_docs, steps=2, eval_source=held_out)
    assert result.eval_metrics == {} and all("eval" not in m for m in lines_of(result))
    assert load_checkpoint(result.checkpoint_uri)["step"] == 2  # and the run still finished
