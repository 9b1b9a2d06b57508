"""Calibration mechanics on a tiny random model (its deltas mean nothing; their arithmetic does)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import byte_tokenizer

from editing import Selection, apply, calibrate, calibrate_batch, edit, wrap
from rwkv_jax import batch
from rwkv_jax.bundle import Model
from rwkv_jax.config import Config
from rwkv_jax.model import forward
from rwkv_jax.state import COMPONENTS, State
from rwkv_jax.tokenizer import Tokenizer

TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def model(tiny):
    cfg, params = tiny
    return Model(params, cfg, byte_tokenizer())


def parts(model):
    return model.params, model.cfg, model.tokenizer


def state_after(model, text, state):
    """Reference: the core forward pass on the exact, unpadded tokens of `text`."""
    tokens = jnp.array(model.tokenizer.encode(text), jnp.int32)
    return forward(model.params, model.cfg, tokens, state)[1]


def assert_close(a, b, **tol):
    for c in COMPONENTS:
        np.testing.assert_allclose(getattr(a, c), getattr(b, c), err_msg=c, **(tol or TOL))


def test_chat_wrapping_makes_a_finished_user_turn_and_bare_leaves_text_alone():
    assert wrap("Alice has a red hat.") == "User: Alice has a red hat.\n\n"
    assert wrap("Alice has a red hat.", "bare") == "Alice has a red hat."
    with pytest.raises(ValueError, match="template must be one of"):
        wrap("x", "markdown")


def test_calibration_is_the_difference_of_the_states_both_prompts_leave(model):
    # the prefix has the prompts' length, so one compiled reference forward serves all three
    prefix = state_after(model, "User: Hi, how are you today?\n\n", State.zeros(model.cfg))
    for init in (None, prefix):
        start = State.zeros(model.cfg) if init is None else init
        old = state_after(model, "User: Alice has a red hat.\n\n", start)
        new = state_after(model, "User: Alice has a tan hat.\n\n", start)
        got = calibrate(*parts(model), "Alice has a red hat.", "Alice has a tan hat.", init_state=init)
        want = jax.tree.map(lambda n, o: np.asarray(n) - np.asarray(o), new, old)
        assert_close(got, want)


def test_bare_calibration_reads_the_prompts_verbatim(model):
    chat = calibrate(*parts(model), "Bob is 7.", "Bob is 9.")
    bare = calibrate(*parts(model), wrap("Bob is 7."), wrap("Bob is 9."), template="bare")
    assert_close(bare, chat, rtol=0, atol=0)
    unwrapped = calibrate(*parts(model), "Bob is 7.", "Bob is 9.", template="bare")
    assert not np.allclose(unwrapped.wkv, chat.wkv)


def test_batched_calibration_equals_one_by_one_so_padding_does_not_leak(model):
    pairs = [
        ("Bob is 7.", "Bob is 9."),  # 16 tokens wrapped: pads 16 in its own bucket, 48 here
        ("Carol lives in a small town by the sea, in Oslo.",
         "Carol lives in a small town by the sea, in Rome."),  # 58 tokens wrapped
        ("Dan's dog is brown.", "Dan's dog is black."),  # lengths differ within the pair
    ]
    batch = calibrate_batch(*parts(model), pairs)
    assert batch.wkv.shape[0] == len(pairs)
    for i, pair in enumerate(pairs):
        assert_close(jax.tree.map(lambda x, i=i: x[i], batch), calibrate(*parts(model), *pair))


def test_batched_calibration_starts_each_pair_from_its_own_state(model):
    pairs = [("Bob is 7.", "Bob is 9."), ("Eve is 3.", "Eve is 4.")]
    starts = calibrate_batch(*parts(model), [("Hi.", "Hello there.")])  # any two distinct states
    inits = jax.tree.map(lambda d: jnp.stack([d[0], -d[0]]), starts)
    batch = calibrate_batch(*parts(model), pairs, init_state=inits)
    for i, pair in enumerate(pairs):
        one = calibrate(*parts(model), *pair, init_state=jax.tree.map(lambda x, i=i: x[i], inits))
        assert_close(jax.tree.map(lambda x, i=i: x[i], batch), one)


def test_edit_applies_the_calibrated_delta_with_its_strength_and_scope(model):
    state = jax.tree.map(lambda d: d[0], calibrate_batch(*parts(model), [("Hi.", "Hey.")]))
    sel = Selection(layers="upper_half", components="wkv")
    got = edit(*parts(model), state, "Bob is 7.", "Bob is 9.", alpha=0.5, select=sel)
    want = apply(state, calibrate(*parts(model), "Bob is 7.", "Bob is 9."), alpha=0.5, select=sel)
    assert_close(got, want, rtol=0, atol=0)


def test_prompts_of_one_length_bucket_share_one_compiled_kernel(model):
    # Counts compiled variants rather than wrapping the kernel with chex.assert_max_traces: a
    # fresh wrapped kernel would cost one more model compilation, the slowest step here.
    calibrate(*parts(model), "Bob is 7.", "Bob is 9.")
    compiled = batch.read._cache_size()
    for old, new in [("Ann is tall.", "Ann is short."), ("Cy has a cat.", "Cy has a dog.")]:
        calibrate(*parts(model), old, new)
    assert batch.read._cache_size() == compiled


def test_calibration_arguments_are_checked(model):
    other = State.zeros(Config.default(3, 128, 257))
    with pytest.raises(ValueError, match="template must be one of"):
        calibrate(*parts(model), "a", "b", template="chatml")
    with pytest.raises(ValueError, match="encodes to no tokens"):
        calibrate(*parts(model), "", "b", template="bare")
    with pytest.raises(TypeError, match="texts must be str"):
        calibrate(*parts(model), b"a", "b", template="bare")
    big = Tokenizer({i + 1: bytes([i]) for i in range(256)} | {999: b"zz"})
    with pytest.raises(ValueError, match=f"outside the model's vocabulary of {model.cfg.vocab_size}"):
        calibrate(model.params, model.cfg, big, "zz", "b")
    with pytest.raises(ValueError, match="do not belong to a model with L=2"):
        calibrate(*parts(model), "a", "b", init_state=other)
    with pytest.raises(ValueError, match="must be one state"):
        calibrate(*parts(model), "a", "b", init_state=State.zeros(model.cfg, (2,)))
    with pytest.raises(ValueError, match=r"neither \(\) nor \(2,\)"):
        calibrate_batch(*parts(model), [("a", "b")] * 2, init_state=State.zeros(model.cfg, (3,)))
    for pairs in ([], ("a", "b"), [("a", "b", "c")]):
        with pytest.raises(ValueError, match="non-empty sequence of"):
            calibrate_batch(*parts(model), pairs)


def test_byte_tokenizer_covers_every_string():
    tok = byte_tokenizer()
    text = "Zoë's café — 7°"
    assert tok.decode(tok.encode(text)) == text
    assert max(tok.encode(text)) < tok.vocab_size == 257
