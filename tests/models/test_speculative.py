"""KV cache and decoding: cached logits == full logits, rollback, greedy, speculative == greedy."""

from __future__ import annotations

import pytest
import torch

from models.generate import GenerationResult, generate_greedy, generate_speculative
from models.kv_cache import KVCache
from models.lm import DecoderLM, LMConfig

V = 61


def make_model(seed: int = 0, **overrides) -> DecoderLM:
    torch.manual_seed(seed)
    cfg = LMConfig.preset("tiny", vocab_size=V, block_size=96, **overrides)
    return DecoderLM(cfg).eval()


@pytest.fixture(scope="module")
def trained() -> DecoderLM:
    """A tiny model with 3 Medusa heads and 2 MTP depths that learned a periodic corpus."""
    torch.set_num_threads(1)
    model = make_model(medusa_heads=3, mtp_depth=2).train()
    period = torch.tensor([5, 9, 2, 17, 33, 8, 40, 11, 3, 27, 50, 6])
    seqs = torch.stack([period.roll(-s).repeat(6)[:65] for s in range(12)])  # (12, 65)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        _, loss = model(seqs[:, :-1], seqs[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("chunks", [[20, 1, 1, 1], [1, 1, 1, 1, 1], [7, 5, 3, 9], [4, 30]])
def test_cached_incremental_logits_equal_full_forward(chunks):
    model = make_model()
    idx = torch.randint(0, V, (2, sum(chunks)))
    full, _ = model(idx)
    cache, parts, start = model.new_kv_cache(), [], 0
    with torch.no_grad():
        for n in chunks:
            parts.append(model.head(model.hidden_states(idx[:, start : start + n], cache)))
            start += n
    assert cache.length == idx.size(1)
    torch.testing.assert_close(torch.cat(parts, dim=1), full.detach(), atol=1e-5, rtol=0)


def test_truncate_rolls_back_rejected_tokens():
    model = make_model()
    idx = torch.randint(0, V, (1, 24))
    wrong = (idx[:, 16:] + 1) % V
    cache = model.new_kv_cache()
    with torch.no_grad():
        model.hidden_states(idx[:, :16], cache)
        model.hidden_states(wrong, cache)  # 8 tokens that will be rejected
        assert cache.length == 24
        cache.truncate(16)
        got = model.head(model.hidden_states(idx[:, 16:], cache))
        full, _ = model(idx)
    torch.testing.assert_close(got, full[:, 16:], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "action",
    [
        lambda c: c.truncate(5),  # beyond the valid positions
        lambda c: c.truncate(-1),
        lambda c: c.advance(9),  # more than max_len
        lambda c: KVCache(0, 8),
    ],
)
def test_kv_cache_bounds_raise(action):
    cache = KVCache(n_layer=1, max_len=8)
    cache.advance(4)
    with pytest.raises(ValueError):
        action(cache)


def test_cached_forward_past_block_size_raises():
    model = make_model()
    cache = model.new_kv_cache()
    with torch.no_grad():
        model.hidden_states(torch.zeros(1, 90, dtype=torch.long), cache)
        with pytest.raises(ValueError, match="block_size"):
            model.hidden_states(torch.zeros(1, 7, dtype=torch.long), cache)


def test_generate_greedy_matches_uncached_argmax_loop():
    model = make_model()
    prompt = torch.randint(0, V, (3, 5))
    result = generate_greedy(model, prompt, 12)
    seq = prompt
    with torch.no_grad():
        for _ in range(12):
            logits, _ = model(seq)
            seq = torch.cat((seq, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(result.tokens, seq)
    assert result.new_tokens == 12 and result.steps == 11 and result.mean_accepted == 1.0


def _check_speculative_equals_greedy(model, draft, prompts, new_tokens):
    means = []
    for prompt in prompts:
        ref = generate_greedy(model, prompt, new_tokens)
        got = generate_speculative(model, prompt, new_tokens, draft=draft)
        assert isinstance(got, GenerationResult)
        assert torch.equal(got.tokens, ref.tokens), (draft, prompt.tolist())
        assert sum(got.accepted) == new_tokens - 1 and got.steps == len(got.accepted)
        means.append(got.mean_accepted)
    return sum(means) / len(means)


@pytest.mark.parametrize("draft", ["medusa", "mtp"])
def test_speculative_equals_greedy_on_untrained_model(draft):
    model = make_model(seed=1, medusa_heads=3, mtp_depth=2)
    with torch.no_grad():  # untrained heads copy the LM head; make them disagree with it
        for block in model.medusa.blocks:
            block.linear.weight.normal_(0.0, 1.0)
    prompts = [torch.randint(0, V, (1, n), generator=torch.Generator().manual_seed(n))
               for n in (1, 4, 11)]
    mean = _check_speculative_equals_greedy(model, draft, prompts, 25)
    assert 1.0 <= mean < 1.8, mean  # most drafts are rejected and rolled back


@pytest.mark.parametrize("draft, max_accept", [("medusa", 4), ("mtp", 3)])
def test_speculative_equals_greedy_and_accepts_more_when_trained(trained, draft, max_accept):
    period = [5, 9, 2, 17, 33, 8, 40, 11, 3, 27, 50, 6]
    prompts = [torch.tensor([period[s:] + period[:s]]) for s in (0, 3, 7)]
    prompts.append(torch.tensor([[5, 9, 2, 1, 1]]))  # off-corpus start
    mean = _check_speculative_equals_greedy(trained, draft, prompts, 40)
    assert 1.8 < mean <= max_accept, mean  # drafts of the learned cycle are mostly right


def test_speculative_respects_max_draft_and_window(trained):
    prompt = torch.tensor([[5, 9, 2, 17, 33, 8]])
    ref = generate_greedy(trained, prompt, 30)
    one = generate_speculative(trained, prompt, 30, draft="medusa", max_draft=1)
    win = generate_speculative(trained, prompt, 30, draft="mtp", mtp_window=4)
    assert torch.equal(one.tokens, ref.tokens) and torch.equal(win.tokens, ref.tokens)
    assert max(one.accepted) <= 2


@pytest.mark.parametrize(
    "kwargs, prompt, error",
    [
        (dict(draft="medusa"), torch.zeros(2, 4, dtype=torch.long), ValueError),  # batch 2
        (dict(draft="beam"), torch.zeros(1, 4, dtype=torch.long), ValueError),
        (dict(draft="medusa", max_new_tokens=93), torch.zeros(1, 4, dtype=torch.long), ValueError),
        (dict(draft="medusa", max_new_tokens=0), torch.zeros(1, 4, dtype=torch.long), ValueError),
        (dict(draft="medusa"), torch.zeros(1, 4), TypeError),  # float prompt
    ],
)
def test_speculative_bad_arguments_raise(trained, kwargs, prompt, error):
    kwargs = {"max_new_tokens": 8, **kwargs}
    with pytest.raises(error):
        generate_speculative(trained, prompt, **kwargs)


@pytest.mark.parametrize("draft, overrides", [("medusa", dict(mtp_depth=1)), ("mtp", {})])
def test_speculative_needs_its_draft_source(draft, overrides):
    with pytest.raises(ValueError, match=draft):
        generate_speculative(make_model(**overrides), torch.zeros(1, 3, dtype=torch.long), 4,
                             draft=draft)


@pytest.mark.cuda
def test_cuda_cached_decoding_matches_full_forward():
    model = make_model(medusa_heads=2).cuda()
    idx = torch.randint(0, V, (1, 40), device="cuda")
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.new_kv_cache()
        a = model.head(model.hidden_states(idx[:, :30], cache))
        b = model.head(model.hidden_states(idx[:, 30:], cache))
    torch.testing.assert_close(torch.cat((a, b), dim=1), full, atol=1e-4, rtol=1e-4)
    prompt = idx[:, :8]
    ref = generate_greedy(model, prompt, 24)
    assert torch.equal(generate_speculative(model, prompt, 24).tokens, ref.tokens)
