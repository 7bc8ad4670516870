"""Static-buffer decoding: batched greedy and speculative == models.generate's greedy."""

from __future__ import annotations

import pytest
import torch

from models.generate import generate_greedy, generate_speculative
from models.lm import DecoderLM, LMConfig
from models.static_decode import StaticDecoder

V = 61
PERIOD = torch.tensor([5, 9, 2, 17, 33, 8, 40, 11, 3, 27, 50, 6])


def make_model(seed: int = 0, **overrides) -> DecoderLM:
    torch.manual_seed(seed)
    cfg = LMConfig.preset("tiny", vocab_size=V, block_size=96, **overrides)
    return DecoderLM(cfg).eval()


@pytest.fixture(scope="module")
def trained() -> DecoderLM:
    """3 Medusa heads and 2 MTP depths that learned a periodic corpus: drafts get accepted."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = make_model(medusa_heads=3, mtp_depth=2).train()
    seqs = torch.stack([PERIOD.roll(-s).repeat(6)[:65] for s in range(12)])  # (12, 65)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        _, loss = model(seqs[:, :-1], seqs[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    return model.eval()


def prompts(B: int, T: int, periodic: bool = True) -> torch.Tensor:
    if periodic:  # rows start at different phases of the learned period
        return torch.stack([PERIOD.roll(-3 * b).repeat(4)[:T] for b in range(B)])
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(B * 100 + T))


def reference(model: DecoderLM, prompt: torch.Tensor, n: int) -> torch.Tensor:
    return torch.cat([generate_greedy(model, prompt[b : b + 1], n).tokens
                      for b in range(prompt.size(0))])


@pytest.mark.parametrize("B,T,n,periodic", [(1, 8, 20, True), (3, 5, 17, False),
                                            (4, 1, 9, False), (2, 12, 30, True)])
def test_static_greedy_equals_generate_greedy(trained, B, T, n, periodic):
    prompt = prompts(B, T, periodic)
    dec = StaticDecoder(trained, batch_size=4, max_len=T + n + 4, check_every=3)
    got = dec.greedy(prompt, n)
    assert got.tokens.shape == (B, T + n)
    assert torch.equal(got.tokens, reference(trained, prompt, n))
    assert got.mean_accepted == 1.0 and got.steps == n


@pytest.mark.parametrize("draft", ["medusa", "mtp"])
@pytest.mark.parametrize("B,periodic", [(1, True), (4, True), (3, False)])
def test_batched_speculation_equals_greedy_with_per_row_acceptance(trained, draft, B, periodic):
    T, n = 10, 40
    prompt = prompts(B, T, periodic)
    if not periodic:  # one periodic row among random ones: rows accept differently
        prompt[0] = prompts(1, T)[0]
    dec = StaticDecoder(trained, batch_size=4, max_len=T + n + 4)
    got = dec.speculative(prompt, n, draft=draft, mtp_window=8)
    assert torch.equal(got.tokens, reference(trained, prompt, n))
    assert got.mean_accepted > 1.5  # the learned period: most drafts are right
    assert got.steps < n  # fewer verification steps than tokens
    if B == 1 and draft == "medusa":  # as many tokens a step as the one-sequence version
        one = generate_speculative(trained, prompt, n, draft="medusa")
        assert got.mean_accepted >= one.mean_accepted - 0.35


def test_a_decoder_is_reused_across_calls_and_batch_sizes(trained):
    dec = StaticDecoder(trained, batch_size=4, max_len=64)
    a = dec.speculative(prompts(2, 6), 20, draft="medusa")
    b = dec.greedy(prompts(3, 9, periodic=False), 25)
    c = dec.speculative(prompts(2, 6), 20, draft="medusa")
    assert torch.equal(a.tokens, c.tokens)
    assert torch.equal(b.tokens, reference(trained, prompts(3, 9, periodic=False), 25))


@pytest.mark.parametrize("make,match", [
    (lambda m: StaticDecoder(m, batch_size=2, max_len=97), "max_len"),
    (lambda m: StaticDecoder(m, batch_size=2, max_len=20).greedy(prompts(3, 4), 4), "B <= 2"),
    (lambda m: StaticDecoder(m, batch_size=2, max_len=20).greedy(prompts(1, 10), 15),
     "max_len >= 25"),
    (lambda m: StaticDecoder(m, batch_size=1, max_len=40).speculative(prompts(1, 5), 4,
                                                                      draft="eagle"), "draft"),
])
def test_bad_arguments_raise(trained, make, match):
    with pytest.raises(ValueError, match=match):
        make(trained)


@pytest.mark.parametrize("overrides,match", [
    ({"mixer": "mamba2"}, "softmax attention"),
    ({"mixer": ["attention", "linear"]}, "layer 1"),
])
def test_other_mixers_are_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        StaticDecoder(make_model(**overrides), batch_size=1)


def test_no_draft_source_is_refused():
    with pytest.raises(ValueError, match="medusa_heads"):
        StaticDecoder(make_model(), batch_size=1, max_len=40).speculative(prompts(1, 4), 8)


@pytest.mark.cuda
@pytest.mark.parametrize("draft", ["medusa", "mtp"])
def test_cuda_graphs_replay_the_eager_tokens(trained, draft):
    model = make_model(medusa_heads=3, mtp_depth=2)
    model.load_state_dict(trained.state_dict())
    model = model.cuda().eval()
    torch.backends.cuda.matmul.allow_tf32 = False
    prompt = prompts(4, 10).cuda()
    dec = StaticDecoder(model, batch_size=8, max_len=60)
    assert dec.graphs and dec.compile
    greedy = dec.greedy(prompt, 40)
    assert torch.equal(greedy.tokens.cpu(), reference(trained, prompt.cpu(), 40))
    spec = dec.speculative(prompt, 40, draft=draft, mtp_window=8)
    assert torch.equal(spec.tokens, greedy.tokens) and spec.mean_accepted > 1.5
