"""Decoding: searches against hand-built next-token distributions, cached models against full
forward passes, and attention weights for visualisation."""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tfm import decoding as D
from tfm.config import get_preset
from tfm.models import EncoderDecoder, build_model, param_shapes

EOS = D.EOS_ID
BOS = D.BOS_ID


# ---------------------------------------------------------------------- hand-built distributions
def markov_step(table: np.ndarray) -> D.StepFn:
    """Next-token log-probabilities depend only on the previous token: table[prev] (V, V).

    The state counts steps per row, so reordering it in beam search is visible (and harmless)."""
    logits = jnp.log(jnp.asarray(table, jnp.float32))

    def step_fn(tokens, state):
        return logits[tokens], {"count": state["count"] + 1}

    return step_fn


def prefix_step(vocab: int, seed: int = 0, buckets: int = 97) -> D.StepFn:
    """Random next-token logits that depend on the whole prefix (through a rolling hash kept in
    the state): beam search must reorder the state with its beams to score hypotheses right."""
    table = jax.random.normal(jax.random.key(seed), (buckets, vocab), jnp.float32) * 2.0

    def step_fn(tokens, state):
        h = (state["hash"] * 31 + tokens + 7) % buckets  # (B,)
        return table[h], {"hash": h}

    return step_fn


def prefix_logprob(vocab: int, seed: int, first: int, seq, buckets: int = 97) -> float:
    """log P(seq) under :func:`prefix_step`, recomputed in NumPy float64."""
    table = np.asarray(jax.random.normal(jax.random.key(seed), (buckets, vocab), jnp.float32) * 2.0, np.float64)
    h, prev, total = 0, first, 0.0
    for tok in seq:
        h = (h * 31 + prev + 7) % buckets
        row = table[h]
        total += row[tok] - (np.log(np.exp(row - row.max()).sum()) + row.max())
        prev = tok
    return total


# pad, bos, eos, a, b. After bos: a 0.6, b 0.4. After a: a 0.45, b 0.2, eos 0.35 (greedy keeps
# saying "a"). After b: eos 0.9. Best sequence: "b eos" (0.36) beats "a eos" (0.21) and anything
# longer; greedy gives "a a a ...". Rows sum to 1 (tiny mass on pad/bos to keep logs finite).
_TINY = 1e-6
MARKOV = np.array(
    [
        [_TINY, _TINY, 0.2, 0.4, 0.4],  # after pad (never used)
        [_TINY, _TINY, _TINY, 0.6, 0.4],  # after bos
        [_TINY, _TINY, 0.2, 0.4, 0.4],  # after eos (never used)
        [_TINY, _TINY, 0.35, 0.45, 0.2],  # after a
        [_TINY, _TINY, 0.9, 0.05, 0.05],  # after b
    ]
)
MARKOV = MARKOV / MARKOV.sum(1, keepdims=True)


def brute_force_best(table, first, max_len, alpha):
    """The best finished sequence (ending in EOS, or of length max_len) by normalised score."""
    vocab = table.shape[0]
    best, best_score = None, -np.inf
    for length in range(1, max_len + 1):
        for seq in itertools.product(range(3, vocab), repeat=length - 1):
            for last in (EOS,) if length < max_len else (EOS, *range(3, vocab)):
                full = (*seq, last)
                logp, prev = 0.0, first
                for tok in full:
                    logp += math.log(table[prev, tok])
                    prev = tok
                score = logp / ((5 + length) / 6) ** alpha
                if score > best_score:
                    best, best_score = full, score
    return best, best_score


def run_beam(step_fn, state, first, eos_id=EOS, **kw):
    return jax.jit(lambda s, f: D.beam_search(step_fn, s, f, eos_id=eos_id, **kw))(state, first)


def test_length_penalty_formula():
    for length in (1, 2, 7, 50):
        for alpha in (0.0, 0.6, 1.0):
            expected = (5 + length) ** alpha / (5 + 1) ** alpha
            np.testing.assert_allclose(D.length_penalty(length, alpha), expected, rtol=1e-6)


def test_beam_search_finds_known_best_sequence_that_greedy_misses():
    first = jnp.full((2,), D.BOS_ID, jnp.int32)
    state = {"count": jnp.zeros((2,), jnp.int32)}
    step_fn = markov_step(MARKOV)
    max_len = 6
    greedy = jax.jit(lambda s, f: D.greedy_search(step_fn, s, f, max_len=max_len, eos_id=EOS))(state, first)
    assert greedy.tokens[0].tolist() == [3] * max_len  # "a a a a a a", no EOS

    best, best_score = brute_force_best(MARKOV, D.BOS_ID, max_len, alpha=0.6)
    assert best == (4, EOS)
    for beam_size in (2, 4):
        beams = run_beam(step_fn, state, first, beam_size=beam_size, alpha=0.6, max_len=max_len)
        assert beams.tokens[0, 0].tolist() == [4, EOS, 0, 0, 0, 0]
        assert beams.lengths[0, 0] == 2
        np.testing.assert_allclose(beams.scores[0, 0], best_score, rtol=1e-5)
        # scores are sorted and follow log P / ((5 + len) / 6)^alpha
        assert np.all(np.diff(np.asarray(beams.scores[0])) <= 0)
        for hyp, score, length in zip(beams.tokens[0], beams.scores[0], beams.lengths[0]):
            seq = np.asarray(hyp[:length])
            logp = np.log(MARKOV[np.r_[D.BOS_ID, seq[:-1]], seq]).sum()
            np.testing.assert_allclose(score, logp / ((5 + length) / 6) ** 0.6, rtol=1e-5)


# pad, bos, eos, a, b, c: "a b c eos" has probability 0.9^3 * 0.94 = 0.69; every step also
# offers EOS at 0.04, so short junk hypotheses ("eos", "a eos") finish first.
_CHAIN = np.array(
    [
        [_TINY, _TINY, 0.25, 0.25, 0.25, 0.25],  # after pad (never used)
        [_TINY, _TINY, 0.04, 0.90, 0.03, 0.03],  # after bos: a
        [_TINY, _TINY, 0.25, 0.25, 0.25, 0.25],  # after eos (never used)
        [_TINY, _TINY, 0.04, 0.03, 0.90, 0.03],  # after a: b
        [_TINY, _TINY, 0.04, 0.03, 0.03, 0.90],  # after b: c
        [_TINY, _TINY, 0.94, 0.02, 0.02, 0.02],  # after c: eos
    ]
)
_CHAIN = _CHAIN / _CHAIN.sum(1, keepdims=True)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
@pytest.mark.parametrize("beam_size", [2, 4])
def test_beam_search_does_not_stop_at_k_junk_hypotheses(alpha, beam_size):
    # Regression: the search stopped once K hypotheses had finished, so K short junk ones
    # (EOS right away, "a eos", ...) ended it before the best one finished; a trained
    # number model said "nine" -> "ner" with beam 4 while greedy said "neun".
    first = jnp.full((1,), D.BOS_ID, jnp.int32)
    state = {"count": jnp.zeros((1,), jnp.int32)}
    best, best_score = brute_force_best(_CHAIN, D.BOS_ID, 6, alpha=alpha)
    assert best == (3, 4, 5, EOS)
    beams = run_beam(markov_step(_CHAIN), state, first, beam_size=beam_size, alpha=alpha, max_len=6)
    assert beams.tokens[0, 0].tolist() == [3, 4, 5, EOS, 0, 0]
    np.testing.assert_allclose(beams.scores[0, 0], best_score, rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.0])  # alpha > 0 may let a longer runner-up win (decoding docstring)
def test_beam_one_equals_greedy_on_prefix_dependent_distribution(alpha):
    vocab, batch, max_len = 11, 16, 12
    step_fn = prefix_step(vocab, seed=3)
    state = {"hash": jnp.zeros((batch,), jnp.int32)}
    first = jnp.arange(batch, dtype=jnp.int32) % vocab
    limits = jnp.asarray(np.random.default_rng(0).integers(1, max_len + 1, batch), jnp.int32)
    greedy = jax.jit(lambda s, f: D.greedy_search(step_fn, s, f, max_len=max_len, max_lengths=limits, eos_id=EOS))(state, first)
    beams = run_beam(step_fn, state, first, beam_size=1, alpha=alpha, max_len=max_len, max_lengths=limits)
    np.testing.assert_array_equal(beams.tokens[:, 0], greedy.tokens)
    np.testing.assert_array_equal(beams.lengths[:, 0], greedy.lengths)
    assert np.all(greedy.lengths <= limits)
    assert np.any(greedy.lengths < limits)  # some rows stopped at their EOS


def test_beam_scores_match_recomputed_log_probs():
    """Beams carry their own state: each hypothesis' score is log P(hyp) / lp(len) recomputed
    from scratch, which fails if the state were not reordered with the beams."""
    vocab, batch, max_len, alpha, seed = 7, 4, 8, 0.6, 5
    step_fn = prefix_step(vocab, seed=seed)
    first = jnp.arange(batch, dtype=jnp.int32) + 3
    beams = run_beam(step_fn, {"hash": jnp.zeros((batch,), jnp.int32)}, first,
                     beam_size=4, alpha=alpha, max_len=max_len)
    for b in range(batch):
        seen = set()
        for hyp, score, length in zip(beams.tokens[b], beams.scores[b], beams.lengths[b]):
            seq = tuple(np.asarray(hyp[:length]).tolist())
            assert seq not in seen  # distinct hypotheses
            seen.add(seq)
            assert np.all(np.asarray(hyp[length:]) == 0)
            assert seq[-1] == EOS or length == max_len
            logp = prefix_logprob(vocab, seed, int(first[b]), seq)
            np.testing.assert_allclose(score, logp / ((5 + length) / 6) ** alpha, rtol=1e-4)


def test_greedy_stops_each_row_at_its_eos():
    # Row r's distribution emits EOS after r tokens: tokens are 3, 4, ... then EOS.
    vocab, max_len = 12, 8

    def step_fn(tokens, state):
        count = state + 1
        target = jnp.where(count > jnp.arange(4), EOS, count + 2)  # row r: EOS at step r + 1
        return jax.nn.one_hot(target, vocab) * 10.0, count

    out = jax.jit(lambda: D.greedy_search(step_fn, jnp.zeros((4,), jnp.int32), jnp.ones((4,), jnp.int32),
                                          max_len=max_len, eos_id=EOS))()
    assert out.lengths.tolist() == [1, 2, 3, 4]
    assert out.tokens.tolist()[3] == [3, 4, 5, EOS, 0, 0, 0, 0]
    assert out.tokens.tolist()[0] == [EOS] + [0] * 7


def test_filter_logits_top_k_and_top_p():
    logits = jnp.log(jnp.array([[0.5, 0.25, 0.15, 0.1]], jnp.float32))
    kept = lambda f: np.isfinite(np.asarray(f))[0].tolist()
    assert kept(D.filter_logits(logits, top_k=2)) == [True, True, False, False]
    assert kept(D.filter_logits(logits, top_k=0)) == [True] * 4
    assert kept(D.filter_logits(logits, top_p=0.5)) == [True, False, False, False]
    assert kept(D.filter_logits(logits, top_p=0.7)) == [True, True, False, False]
    assert kept(D.filter_logits(logits, top_p=0.76)) == [True, True, True, False]
    assert kept(D.filter_logits(logits, top_k=2, top_p=0.9)) == [True, True, False, False]
    np.testing.assert_allclose(D.filter_logits(logits, temperature=2.0), logits / 2.0, rtol=1e-6)


def test_sampling_frequencies_follow_the_filtered_distribution():
    probs = np.array([0.5, 0.25, 0.15, 0.1])
    batch = 20000
    logits = jnp.log(jnp.asarray(probs, jnp.float32))
    step_fn = lambda tokens, state: (jnp.broadcast_to(logits, (tokens.shape[0], 4)), state)
    first = jnp.zeros((batch,), jnp.int32)
    out = jax.jit(lambda r: D.sample(step_fn, (), first, r, max_len=1, eos_id=-1, top_p=0.7))(jax.random.key(0))
    freq = np.bincount(np.asarray(out.tokens[:, 0]), minlength=4) / batch
    np.testing.assert_allclose(freq, [2 / 3, 1 / 3, 0, 0], atol=0.02)


def test_sampling_is_reproducible_and_top_k_one_is_greedy():
    vocab, batch, max_len = 13, 8, 10
    step_fn = prefix_step(vocab, seed=1)
    state = {"hash": jnp.zeros((batch,), jnp.int32)}
    first = jnp.arange(batch, dtype=jnp.int32)
    run = jax.jit(lambda r, k: D.sample(step_fn, state, first, r, max_len=max_len, top_k=k, eos_id=EOS))
    a, b = run(jax.random.key(7), 0), run(jax.random.key(7), 0)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, run(jax.random.key(8), 0).tokens)
    greedy = D.greedy_search(step_fn, state, first, max_len=max_len, eos_id=EOS)
    np.testing.assert_array_equal(run(jax.random.key(7), 1).tokens, greedy.tokens)


# ---------------------------------------------------------------------- models
def _params(cfg, seed=0):
    """Random params from shapes alone (no compiled init: keeps the tests fast)."""
    rng = np.random.default_rng(seed)

    def fill(path, s):
        if "scale" in jax.tree_util.keystr(path):  # LayerNorm gains near 1
            return jnp.asarray(1.0 + 0.1 * rng.standard_normal(s.shape), s.dtype)
        return jnp.asarray(0.2 * rng.standard_normal(s.shape), s.dtype)

    return build_model(cfg), jax.tree_util.tree_map_with_path(fill, param_shapes(cfg))


def _rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def lm():
    return _params(get_preset("tiny_lm", num_layers=1), seed=3)


@pytest.fixture(scope="module")
def encdec():
    return _params(get_preset("tiny_encdec", max_len=64, num_layers=1), seed=4)


@functools.partial(jax.jit, static_argnames="model")
def _lm_cached_and_full(model, params, prompts, mask, cont):
    """Logits for every continuation position: cached (prefill, then one token per step) and
    from one full forward pass over prompt + continuation. Both (B, T+1, V)."""
    prompt_len, steps = prompts.shape[1], cont.shape[1]
    step_fn, start = D.lm_decoder(model, params, prompts, prompt_len + steps, prompt_mask=mask)

    def body(carry, token):
        state, prev = carry
        logits, state = step_fn(prev, state)
        return (state, token), logits

    feed = jnp.concatenate([cont, cont[:, :1]], 1).T  # the last fed token is never used
    _, cached = jax.lax.scan(body, (start.state, start.first_tokens), feed)
    seq = jnp.concatenate([prompts, cont], 1)
    real = jnp.concatenate([mask, jnp.ones(cont.shape, bool)], 1)
    full = model.apply(
        {"params": params}, seq, segment_ids=real.astype(jnp.int32), positions=D.prompt_positions(real)
    )
    return cached.transpose(1, 0, 2), full[:, prompt_len - 1:]


LM_CONFIGS = {
    "pre_ln_sinusoidal": {},
    "post_ln_learned_scan": {"norm": "post", "positional": "learned", "scan_layers": True},
    "rope_untied": {"positional": "rope", "tie_output": False},
}


@pytest.mark.parametrize("name", sorted(LM_CONFIGS))
def test_lm_cached_logits_equal_full_forward(name):
    cfg = get_preset("tiny_lm", **LM_CONFIGS[name])
    model, params = _params(cfg)
    rng = np.random.default_rng(0)
    batch, prompt_len, steps = 3, 5, 7
    prompts = rng.integers(0, cfg.vocab_size, (batch, prompt_len))
    prompts[0, 2] = prompts[2, 4] = 0  # token 0 is a real token
    cont = jnp.asarray(rng.integers(0, cfg.vocab_size, (batch, steps)), jnp.int32).at[1, 3].set(0)
    mask = np.ones((batch, prompt_len), bool)
    mask[1, :3] = False  # left padding: rows with 5, 2 and 1 prompt tokens
    mask[2, :4] = False
    for m in (np.ones_like(mask), mask):  # without and with padding in the batch
        cached, full = _lm_cached_and_full(model, params, jnp.asarray(prompts, jnp.int32), jnp.asarray(m), cont)
        for t in range(steps + 1):
            assert _rel_err(cached[:, t], full[:, t]) < 1e-5, t


@functools.partial(jax.jit, static_argnames="model")
def _encdec_cached_and_full(model, params, src, mask, dec):
    step_fn, start = D.encdec_decoder(model, params, src, dec.shape[1], inputs_mask=mask, bos_id=BOS)

    def body(state, token):
        logits, state = step_fn(token, state)
        return state, logits

    _, cached = jax.lax.scan(body, start.state, dec.T)
    full = model.apply({"params": params}, src, dec, inputs_segment_ids=mask.astype(jnp.int32))
    return cached.transpose(1, 0, 2), full, start.first_tokens


@pytest.mark.parametrize("scan", [False, True])
def test_encdec_cached_logits_equal_full_forward(scan):
    cfg = get_preset("tiny_encdec", scan_layers=scan, num_layers=1, num_decoder_layers=2)
    model, params = _params(cfg)
    rng = np.random.default_rng(1)
    batch, src_len, steps = 3, 6, 8
    src = rng.integers(0, cfg.vocab_size, (batch, src_len))
    src[0, 1] = src[1, 0] = 0  # token 0 is a real token, in sources and targets
    mask = np.ones((batch, src_len), bool)
    mask[1, 4:] = False
    mask[2, 2:] = False
    dec = np.concatenate([np.full((batch, 1), D.BOS_ID), rng.integers(0, cfg.vocab_size, (batch, steps - 1))], 1)
    dec[0, 3] = 0
    dec = jnp.asarray(dec, jnp.int32)
    for m in (np.ones_like(mask), mask):  # without and with padding in the batch
        cached, full, first = _encdec_cached_and_full(model, params, jnp.asarray(src, jnp.int32), jnp.asarray(m), dec)
        np.testing.assert_array_equal(first, dec[:, 0])
        for t in range(steps):
            assert _rel_err(cached[:, t], full[:, t]) < 1e-5, t


def test_cross_attention_keys_values_are_computed_once(encdec):
    model, params = encdec
    src = jnp.asarray(np.random.default_rng(2).integers(3, model.cfg.vocab_size, (2, 5)), jnp.int32)
    cache, _ = D.encdec_cache(model, 2, 5, 4)

    @jax.jit
    def run(cache):
        encoded = model.apply({"params": params}, src, method=EncoderDecoder.encode)

        def decode(cache, enc, tok):
            return model.apply({"params": params, "cache": cache}, enc, jnp.full((2, 1), tok, jnp.int32),
                               decode=True, method=EncoderDecoder.decode, mutable=["cache"])

        _, v = decode(cache, encoded, D.BOS_ID)
        a, _ = decode(v["cache"], encoded, 5)
        b, _ = decode(v["cache"], jnp.zeros_like(encoded), 5)  # ignored: projections are cached
        return v["cache"], a, b

    cache, a, b = run(cache)
    ready = [x for path, x in jax.tree_util.tree_leaves_with_path(cache) if "cross_ready" in str(path)]
    assert ready and all(bool(r) for r in ready)
    np.testing.assert_array_equal(a, b)


@functools.partial(jax.jit, static_argnames=("model", "steps"))
def _lm_recomputed_greedy(model, params, prompts, mask, steps):
    """Reference: greedy decoding that recomputes the whole prefix every step (no cache)."""
    batch, prompt_len = prompts.shape
    seq = jnp.concatenate([prompts, jnp.ones((batch, steps), jnp.int32)], 1)
    real = jnp.concatenate([mask, jnp.ones((batch, steps), bool)], 1)
    positions = D.prompt_positions(real)

    def body(t, seq):  # causal: the tail is unseen
        logits = model.apply({"params": params}, seq, segment_ids=real.astype(jnp.int32), positions=positions)
        token = jnp.argmax(jax.lax.dynamic_index_in_dim(logits, prompt_len - 1 + t, 1, False), -1)
        return jax.lax.dynamic_update_slice(seq, token[:, None].astype(jnp.int32), (0, prompt_len + t))

    return jax.lax.fori_loop(0, steps, body, seq)[:, prompt_len:]


PROMPTS = [[0, 0, 5, 0, 7], [9, 8, 7, 6, 5]]  # row 0: left padding, then a real token 0
PROMPT_MASK = [[False, False, True, True, True], [True] * 5]


def test_lm_beam_one_equals_greedy(lm):
    model, params = lm
    prompts = jnp.asarray(PROMPTS, jnp.int32)
    out = D.lm_generate(model, params, prompts, prompt_mask=PROMPT_MASK, max_new_tokens=9, eos_id=EOS)
    beams = D.lm_beam_search(model, params, prompts, prompt_mask=PROMPT_MASK, max_new_tokens=9, beam_size=1, eos_id=EOS)
    np.testing.assert_array_equal(beams.tokens[:, 0], out.tokens)
    np.testing.assert_array_equal(beams.lengths[:, 0], out.lengths)


@pytest.mark.slow
def test_lm_greedy_equals_recomputed_greedy(lm):
    model, params = lm
    prompts = jnp.asarray(PROMPTS, jnp.int32)
    n = 9
    out = D.lm_generate(model, params, prompts, prompt_mask=PROMPT_MASK, max_new_tokens=n, eos_id=EOS)
    reference = _lm_recomputed_greedy(model, params, prompts, jnp.asarray(PROMPT_MASK), n)
    for row, length in enumerate(np.asarray(out.lengths)):
        np.testing.assert_array_equal(out.tokens[row, :length], reference[row, :length])


def test_lm_sampling_reproducible_and_top_k_one_greedy(lm):
    model, params = lm
    prompts = jnp.asarray(PROMPTS, jnp.int32)
    kw = {"max_new_tokens": 9, "temperature": 1.5, "prompt_mask": PROMPT_MASK, "eos_id": EOS}
    a = D.lm_generate(model, params, prompts, rng=jax.random.key(1), **kw)
    b = D.lm_generate(model, params, prompts, rng=jax.random.key(1), **kw)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    c = D.lm_generate(model, params, prompts, rng=jax.random.key(2), **kw)
    assert not np.array_equal(a.tokens, c.tokens)
    greedy = D.lm_generate(model, params, prompts, prompt_mask=PROMPT_MASK, max_new_tokens=9, eos_id=EOS)
    k1 = D.lm_generate(model, params, prompts, rng=jax.random.key(1), top_k=1, **kw)
    np.testing.assert_array_equal(k1.tokens, greedy.tokens)


@functools.partial(jax.jit, static_argnames=("model", "steps"))
def _encdec_recomputed_greedy(model, params, src, mask, steps):
    dec = jnp.concatenate([jnp.full((src.shape[0], 1), D.BOS_ID, jnp.int32),
                           jnp.ones((src.shape[0], steps), jnp.int32)], 1)

    def body(t, dec):
        logits = model.apply({"params": params}, src, dec, inputs_segment_ids=mask.astype(jnp.int32))
        token = jnp.argmax(jax.lax.dynamic_index_in_dim(logits, t, 1, False), -1)
        return jax.lax.dynamic_update_slice(dec, token[:, None].astype(jnp.int32), (0, t + 1))

    return jax.lax.fori_loop(0, steps, body, dec)[:, 1:]


SRC = [[5, 6, 7, EOS, 0, 0], [9, 8, 0, 6, 5, EOS]]  # row 0: right padding; row 1: a real token 0
SRC_MASK = [[True] * 4 + [False] * 2, [True] * 6]


def test_encdec_beam_one_equals_greedy_and_max_length(encdec):
    model, params = encdec
    src = jnp.asarray(SRC, jnp.int32)
    greedy = D.encdec_greedy(model, params, src, inputs_mask=SRC_MASK, extra_len=3, eos_id=EOS, bos_id=BOS)
    assert greedy.tokens.shape == (2, 6 + 3)
    assert np.all(np.asarray(greedy.lengths) <= np.array([4 + 3, 6 + 3]))
    beam1 = D.encdec_beam_search(model, params, src, inputs_mask=SRC_MASK, beam_size=1, extra_len=3, eos_id=EOS, bos_id=BOS)
    np.testing.assert_array_equal(beam1.tokens[:, 0], greedy.tokens)
    beams = D.encdec_beam_search(model, params, src, inputs_mask=SRC_MASK, extra_len=3, eos_id=EOS, bos_id=BOS)  # paper: K=4, alpha 0.6
    assert beams.tokens.shape == (2, 4, 9)
    assert np.all(np.diff(np.asarray(beams.scores), axis=1) <= 0)
    assert np.all(np.asarray(beams.lengths) <= np.array([[4 + 3], [6 + 3]]))
    # The paper's default maximum output length: input length + 50 (capped by max_len).
    shape = jax.eval_shape(lambda: D.encdec_greedy(model, params, src, eos_id=EOS, bos_id=BOS)).tokens.shape
    assert shape == (2, min(6 + 50, model.cfg.max_len))


@pytest.mark.slow
def test_encdec_greedy_equals_recomputed_greedy(encdec):
    model, params = encdec
    src = jnp.asarray(SRC, jnp.int32)
    greedy = D.encdec_greedy(model, params, src, inputs_mask=SRC_MASK, extra_len=3, eos_id=EOS, bos_id=BOS)
    reference = _encdec_recomputed_greedy(model, params, src, jnp.asarray(SRC_MASK), greedy.tokens.shape[1])
    for row, length in enumerate(np.asarray(greedy.lengths)):
        np.testing.assert_array_equal(greedy.tokens[row, :length], reference[row, :length])


def test_too_long_generation_is_a_clear_error(lm):
    model, params = lm
    with pytest.raises(ValueError, match=f"max_len={model.cfg.max_len}"):
        D.lm_generate(model, params, jnp.ones((1, 8), jnp.int32), max_new_tokens=model.cfg.max_len, eos_id=EOS)


def test_left_padded_lm_prompts_decode_as_each_prompt_alone(lm):
    """A batch of left-padded prompts (padding marked by prompt_mask, filled with an arbitrary
    id) gives every row the continuation it gets alone, unpadded; token 0 is a real token."""
    model, params = lm
    rows = [[0, 0, 4], [9, 8, 7, 6, 5, 0], [11]]
    width = 6
    fill = np.full((3, width), 13, np.int32)  # padding holds 13 here: only the mask matters
    mask = np.zeros((3, width), bool)
    for r, ids in enumerate(rows):
        fill[r, width - len(ids):] = ids
        mask[r, width - len(ids):] = True
    batch = D.lm_generate(model, params, fill, prompt_mask=mask, max_new_tokens=6, eos_id=-1)
    beams = D.lm_beam_search(model, params, fill, prompt_mask=mask, max_new_tokens=6, beam_size=2, eos_id=-1)
    for r, ids in enumerate(rows):
        alone = D.lm_generate(model, params, jnp.asarray([ids], jnp.int32), max_new_tokens=6, eos_id=-1)
        np.testing.assert_array_equal(batch.tokens[r], alone.tokens[0])
        alone_beams = D.lm_beam_search(model, params, jnp.asarray([ids], jnp.int32), max_new_tokens=6,
                                       beam_size=2, eos_id=-1)
        np.testing.assert_array_equal(beams.tokens[r], alone_beams.tokens[0])
        np.testing.assert_allclose(beams.scores[r], alone_beams.scores[0], rtol=1e-5)


def test_padded_sources_translate_as_each_source_alone(encdec):
    """Right-padded sources (inputs_mask; the padding holds an arbitrary id) give every row the
    output it gets alone, and its per-row length limit counts only its real tokens."""
    model, params = encdec
    rows = [[5, 0, 7, EOS], [9, 8, 7, 6, 5, EOS], [0, EOS]]
    src = np.full((3, 6), 21, np.int32)
    mask = np.zeros((3, 6), bool)
    for r, ids in enumerate(rows):
        src[r, :len(ids)] = ids
        mask[r, :len(ids)] = True
    greedy = D.encdec_greedy(model, params, src, inputs_mask=mask, extra_len=2, eos_id=-1, bos_id=BOS)
    beams = D.encdec_beam_search(model, params, src, inputs_mask=mask, beam_size=2, extra_len=2, eos_id=-1, bos_id=BOS)
    np.testing.assert_array_equal(greedy.lengths, [len(ids) + 2 for ids in rows])
    for r, ids in enumerate(rows):
        n = len(ids) + 2
        one = jnp.asarray([ids], jnp.int32)
        alone = D.encdec_greedy(model, params, one, extra_len=2, eos_id=-1, bos_id=BOS)
        np.testing.assert_array_equal(greedy.tokens[r, :n], alone.tokens[0, :n])
        np.testing.assert_array_equal(greedy.tokens[r, n:], D.FILL_ID)
        assert greedy.to_lists()[r] == alone.to_lists()[0]
        alone_beams = D.encdec_beam_search(model, params, one, beam_size=2, extra_len=2, eos_id=-1, bos_id=BOS)
        np.testing.assert_array_equal(beams.tokens[r, :, :n], alone_beams.tokens[0])
        assert beams.best().to_lists()[r] == alone_beams.best().to_lists()[0]


def test_bad_masks_are_clear_errors(lm, encdec):
    model, params = lm
    prompts = jnp.asarray(PROMPTS, jnp.int32)
    with pytest.raises(ValueError, match="LEFT-padded"):
        D.lm_generate(model, params, prompts, prompt_mask=np.array(PROMPT_MASK)[:, ::-1], max_new_tokens=2, eos_id=EOS)
    with pytest.raises(ValueError, match="prompt_mask has shape"):
        D.lm_beam_search(model, params, prompts, prompt_mask=np.ones((2, 3), bool), max_new_tokens=2, eos_id=EOS)
    model, params = encdec
    with pytest.raises(ValueError, match="inputs_mask has shape"):
        D.encdec_greedy(model, params, jnp.asarray(SRC, jnp.int32), inputs_mask=np.ones((2, 5), bool), eos_id=EOS, bos_id=BOS)


# ---------------------------------------------------------------------- attention weights
def _check_weights(weights, q_len, k_len, key_valid):
    """(B, N, T, S) weights: sum to 1 over valid keys, 0 on masked ones."""
    assert weights.shape[2:] == (q_len, k_len)
    w = np.asarray(weights)
    np.testing.assert_array_equal(w * ~key_valid[:, None, None, :], 0)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)


def test_attention_weights_are_sown_without_changing_outputs(encdec):
    model, params = encdec
    cfg = model.cfg
    src = jnp.asarray([[5, 6, 7, EOS, 0], [9, 8, 7, 6, EOS]], jnp.int32)
    dec = jnp.asarray([[1, 4, 5], [1, 6, 7]], jnp.int32)
    src_valid = np.array([[True] * 4 + [False], [True] * 5])
    seg = jnp.asarray(src_valid, jnp.int32)
    plain = jax.jit(model.apply)({"params": params}, src, dec, inputs_segment_ids=seg)
    logits, inter = jax.jit(
        lambda v: model.apply(v, src, dec, inputs_segment_ids=seg, mutable=["intermediates"])
    )({"params": params})
    assert _rel_err(logits, plain) < 1e-6  # (separately compiled, so not bit-identical)
    maps = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(inter)}
    cross = [w for p, w in maps.items() if "cross_attention" in p]
    enc = [w for p, w in maps.items() if "encoder" in p]
    dec_self = [w for p, w in maps.items() if "decoder" in p and "self_attention" in p]
    assert len(enc) == cfg.num_layers and len(cross) == len(dec_self) == cfg.decoder_layers
    for w in cross:
        assert w.shape == (2, cfg.num_heads, 3, 5)
        _check_weights(w, 3, 5, src_valid)
    for w in enc:  # real queries see only real keys (padding queries only padding: unused)
        _check_weights(np.asarray(w)[:1, :, :4], 4, 5, src_valid[:1])
        _check_weights(np.asarray(w)[1:], 5, 5, src_valid[1:])
    for w in dec_self:  # causal: query t sees keys <= t
        w = np.asarray(w)
        np.testing.assert_array_equal(np.triu(w, 1), 0)
        np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
