"""Generation: ragged batches, stop strings, sampling and the returned state."""

import random

import chex
import jax
import jax.numpy as jnp
import pytest
from conftest import perturbed_params

from rwkv_jax import Config, Model, Sampling, State, Tokenizer, forward, generate, world_tokenizer
from rwkv_jax.stops import stop_table

WORDS = ["ab", "\n\n", " the", " cat", "bc", "abc"]


@pytest.fixture(scope="module")
def small_tok():
    vocab = {b + 1: bytes([b]) for b in range(256)}
    vocab |= {257 + i: w.encode() for i, w in enumerate(WORDS)}
    return Tokenizer(vocab, name="small")


@pytest.fixture(scope="module")
def model(small_tok):
    cfg = Config.default(2, 128, small_tok.vocab_size)
    return Model(perturbed_params(cfg, seed=7, scale=0.3), cfg, small_tok)


def constant_model(model, token):
    """A model whose greedy choice is always `token`: logits[token] = D, all others 0."""
    p = dict(model.params)
    D = model.cfg.n_embd
    p["ln_out"] = {"weight": jnp.zeros(D), "bias": jnp.ones(D)}
    p["head"] = jnp.zeros((D, model.cfg.vocab_size)).at[:, token].set(1.0)
    return Model(p, model.cfg, model.tokenizer)


def test_ragged_batch_equals_one_by_one(model):
    prompts = ["the cat", "a much longer prompt than the others, " * 3, "x"]
    batch = generate(model, prompts, max_new_tokens=10, stop=())
    for i, prompt in enumerate(prompts):
        one = generate(model, [prompt], max_new_tokens=10, stop=())
        assert batch.tokens[i] == one.tokens[0]
        # wkv entries reach ~90 here: fp32 sums over a batch of 3 and of 1 differ by ~1e-4 at that scale
        chex.assert_trees_all_close(
            jax.tree.map(lambda x: x[i], batch.state), jax.tree.map(lambda x: x[0], one.state),
            atol=1e-3, rtol=1e-4,
        )


def test_returned_state_has_read_prompt_and_generated_tokens(model):
    out = generate(model, ["the cat"], max_new_tokens=6, stop=())
    ids = model.tokenizer.encode("the cat") + out.tokens[0]
    _, expected = forward(model.params, model.cfg, jnp.array(ids))
    # wkv entries here reach ~30: 1e-4 relative to that scale covers fp32 summation order
    # (chunked read vs per-token steps).
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[0], out.state), expected, atol=3e-3, rtol=1e-4)


def test_decode_from_a_prompt_read_elsewhere_continues_it(model, small_tok):
    """`decode_tokens` starts from the logits and state a caller's own read left behind."""
    from rwkv_jax.generate import _tables, decode_tokens

    ids = small_tok.encode("the cat sat")
    logits, state = forward(model.params, model.cfg, jnp.array(ids), wkv="scan")
    batch = lambda x: x[None]
    out, count, stopped, _ = decode_tokens(
        model.params, model.cfg, batch(logits[-1]), jax.tree.map(batch, state), jax.random.key(0),
        *_tables(small_tok, (), model.cfg.vocab_size), max_new_tokens=8)
    want = generate(model, ["the cat sat"], max_new_tokens=8, stop=())
    assert out[0, : int(count[0])].tolist() == want.tokens[0]
    assert int(count[0]) == 8 and not bool(stopped[0])


def test_stop_string_split_across_tokens_ends_generation(model, small_tok):
    newline = small_tok.encode("\n")[0]
    out = generate(constant_model(model, newline), ["hi"], max_new_tokens=8)
    assert out.tokens[0] == [newline, newline]
    assert out.stopped == [True] and out.texts == [""]


def test_budget_ends_generation_without_stop(model, small_tok):
    ab = small_tok.encode("ab")[0]
    out = generate(constant_model(model, ab), ["hi", "longer prompt"], max_new_tokens=5)
    assert out.tokens == [[ab] * 5, [ab] * 5]
    assert out.stopped == [False, False] and out.texts == ["ababababab"] * 2


def test_finished_rows_keep_their_state(model, small_tok):
    newline = small_tok.encode("\n")[0]
    m = constant_model(model, newline)
    out = generate(m, ["hi"], max_new_tokens=8)
    ids = small_tok.encode("hi") + [newline, newline]
    _, expected = forward(m.params, m.cfg, jnp.array(ids))
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[0], out.state), expected, atol=1e-4, rtol=1e-4)


def test_sampling_is_reproducible_per_key(model):
    s = Sampling(temperature=1.0, top_p=1.0)
    a = generate(model, ["the"], max_new_tokens=12, sampling=s, key=jax.random.key(1), stop=())
    b = generate(model, ["the"], max_new_tokens=12, sampling=s, key=jax.random.key(1), stop=())
    c = generate(model, ["the"], max_new_tokens=12, sampling=s, key=jax.random.key(2), stop=())
    assert a.tokens == b.tokens and a.tokens != c.tokens
    with pytest.raises(ValueError, match="PRNG key"):
        generate(model, ["the"], sampling=s)


def test_top_k_one_and_tiny_top_p_are_greedy(model):
    greedy = generate(model, ["the cat"], max_new_tokens=8, stop=())
    for s in (Sampling(top_k=1, top_p=1.0), Sampling(top_p=1e-6)):
        out = generate(model, ["the cat"], max_new_tokens=8, sampling=s, key=jax.random.key(3), stop=())
        assert out.tokens == greedy.tokens


def test_presence_penalty_stops_repeating(model, small_tok):
    ab = small_tok.encode("ab")[0]
    m = constant_model(model, ab)
    s = Sampling(temperature=1.0, top_p=1e-6, presence_penalty=2 * model.cfg.n_embd)
    out = generate(m, ["hi"], max_new_tokens=4, sampling=s, key=jax.random.key(0), stop=())
    assert out.tokens[0][0] == ab and ab not in out.tokens[0][1:]


def test_state_argument_is_shared_or_batched(model):
    _, s = forward(model.params, model.cfg, jnp.array(model.tokenizer.encode("the cat")))
    shared = generate(model, ["ab", "bc"], max_new_tokens=4, state=s, stop=())
    pair = jax.tree.map(lambda x: jnp.stack([x, x]), s)
    batched = generate(model, ["ab", "bc"], max_new_tokens=4, state=pair, stop=())
    assert shared.tokens == batched.tokens
    with pytest.raises(ValueError, match="batch shape"):
        generate(model, ["ab"], state=State.zeros(model.cfg, (3,)))


@pytest.mark.parametrize("stop", ["\n\n", "User:", "é!"])
def test_stop_automaton_matches_text_search(stop):
    tok = world_tokenizer()
    table = stop_table(tok, stop, tok.vocab_size)
    rng = random.Random(stop)
    pieces = ["\n", "\n\n", "User", ":", " hi", "é", "!", "x", "Us", "er:", "\n\nUser:"]
    for _ in range(200):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 8)))
        q = 0
        for t in tok.encode(text):
            q = table[q, t]
        assert (q == len(stop.encode())) == (stop in text), text


def test_a_model_without_tokenizer_generates_from_token_ids_and_refuses_text(model):
    ids_only = Model(model.params, model.cfg, None)
    out = generate(ids_only, [[258, 259]], max_new_tokens=5)
    assert out.texts is None and not out.stopped[0]
    assert out.tokens == generate(model, [[258, 259]], max_new_tokens=5, stop=()).tokens
    with pytest.raises(ValueError, match="generate with text prompts or stop strings needs text, but this "
                       "model has no tokenizer"):
        generate(ids_only, ["the cat"], max_new_tokens=5)
    with pytest.raises(ValueError, match="no tokenizer"):
        generate(ids_only, [[258]], max_new_tokens=5, stop=("\n\n",))
