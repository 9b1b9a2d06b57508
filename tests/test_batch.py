"""The one batched read: ragged rows equal one-by-one reads, padding rules, state row helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import byte_tokenizer

from rwkv_jax import batch
from rwkv_jax.model import forward
from rwkv_jax.state import COMPONENTS, State

# fp32 sums over a vmapped batch and over one sequence differ in order: entries here are O(1-10)
TOL = dict(rtol=1e-4, atol=1e-5)
ROWS = [[5, 9, 2], list(range(1, 40)), [7]]  # ragged: 3, 39 and 1 tokens


def assert_close(a, b, **tol):
    for c in COMPONENTS:
        np.testing.assert_allclose(getattr(a, c), getattr(b, c), err_msg=c, **(tol or TOL))


@pytest.fixture(scope="module")
def starts(tiny):
    """Three distinct states to read from: `[3]`."""
    cfg, params = tiny
    tokens, lengths = batch.pad([[3, 1, 4], [1, 5], [9, 2, 6, 5]])
    return batch.read(params, cfg, tokens, lengths, State.zeros(cfg))[1]


def test_ragged_read_equals_one_by_one_forward(tiny, starts):
    cfg, params = tiny
    tokens, lengths = batch.pad(ROWS)
    logits, states = batch.read(params, cfg, tokens, lengths, starts)
    for i, row in enumerate(ROWS):
        want_logits, want = forward(params, cfg, jnp.array(row, jnp.int32), batch.take(starts, i), wkv="scan")
        np.testing.assert_allclose(logits[i], want_logits[-1], **TOL)
        assert_close(batch.take(states, i), want)


def test_a_shared_state_reads_as_its_broadcast(tiny, starts):
    cfg, params = tiny
    tokens, lengths = batch.pad(ROWS)
    one = batch.take(starts, 1)
    shared = batch.read(params, cfg, tokens, lengths, one)
    broadcast = batch.read(params, cfg, tokens, lengths, batch.broadcast(one, len(ROWS)))
    np.testing.assert_array_equal(shared[0], broadcast[0])
    assert_close(shared[1], broadcast[1], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"neither \(\) nor \(3,\) for 3 rows"):
        batch.read(params, cfg, tokens, lengths, batch.take(starts, [0, 1]))


def test_reader_reads_texts_in_any_order_and_batch_as_read_does(tiny, starts):
    cfg, params = tiny
    tok = byte_tokenizer()
    texts = ["a much longer text than the others, for a bucket of its own", "hi", "mid length"]
    logits, states = batch.Reader(params, cfg).read_texts(tok, texts, starts)
    for i, text in enumerate(texts):
        tokens, lengths = batch.pad([tok.encode(text)])
        want_logits, want = batch.read(params, cfg, tokens, lengths, batch.take(starts, [i]))
        np.testing.assert_allclose(logits[i], want_logits[0], **TOL)
        assert_close(batch.take(states, i), batch.take(want, 0))


def test_pad_rounds_lengths_up_to_the_bucket_and_refuses_empty_rows():
    tokens, lengths = batch.pad([[1, 2, 3], [4] * 16, [5]])
    assert tokens.shape == (3, 16) and lengths.tolist() == [3, 16, 1]
    assert tokens[0].tolist() == [1, 2, 3] + [0] * 13
    assert batch.pad([[1] * 17])[0].shape == (1, 32)
    assert batch.pad([[1] * 9], bucket=8)[0].shape == (1, 16)
    with pytest.raises(ValueError, match="row 1 has none"):
        batch.pad([[1], []])
    with pytest.raises(ValueError, match="non-empty sequence of token rows"):
        batch.pad([])


def test_encode_refuses_empty_texts_and_foreign_tokens():
    tok = byte_tokenizer()
    with pytest.raises(ValueError, match="encodes to no tokens"):
        batch.encode(tok, ["a", ""], 257)
    with pytest.raises(ValueError, match="outside the model's vocabulary of 100"):
        batch.encode(tok, ["z"], 100)
    with pytest.raises(ValueError, match="non-empty sequence of texts"):
        batch.encode(tok, "abc", 257)


def test_row_counts_pad_to_a_power_of_two_with_copies_of_row_zero():
    assert [batch.power_of_two(n) for n in (1, 2, 3, 4, 5, 8, 9)] == [1, 2, 4, 4, 8, 8, 16]
    x = np.arange(3 * 2).reshape(3, 2)
    padded = batch.pad_rows({"x": x, "n": np.array([7, 8, 9])})
    assert padded["x"].tolist() == [[0, 1], [2, 3], [4, 5], [0, 1]]
    assert padded["n"].tolist() == [7, 8, 9, 7]
    assert batch.pad_rows(x, 6).shape == (6, 2)


@pytest.mark.parametrize("host", [True, False])
def test_take_concat_put_rows_round_trip(tiny, starts, host):
    states = jax.tree.map(np.asarray, starts) if host else starts
    parts = [batch.take(states, [2]), batch.take(states, [0, 1])]
    joined = batch.concat(parts)
    assert_close(batch.take(joined, [1, 2, 0]), states, rtol=0, atol=0)
    zeros = jax.tree.map(lambda x: x * 0, states)
    put = batch.put_rows(zeros, [2, 0], batch.take(states, [2, 0]))
    assert_close(batch.take(put, [0, 2]), batch.take(states, [0, 2]), rtol=0, atol=0)
    assert not np.any(np.asarray(put.wkv[1])) and not np.any(np.asarray(zeros.wkv))  # input untouched
    assert all(isinstance(x, np.ndarray) == host for x in jax.tree.leaves((joined, put)))
    assert batch.broadcast(batch.take(states, 0), 3).batch_shape == (3,)


class TwoRows(batch.DefaultDevice):
    """A placement of two rows a batch, as an evaluator's fixed-size batches are."""

    batch_size = 2

    @staticmethod
    def pad(tree, n: int):
        return batch.pad_rows(tree, 2)


def test_reader_map_runs_any_kernel_in_the_placements_batches_and_keeps_row_order(tiny, starts):
    cfg, params = tiny
    calls = []

    def kernel(p, c, rows, s):
        calls.append(rows.shape[0])
        return rows * 10, s.wkv.sum(axis=(1, 2, 3, 4))

    rows = np.arange(5 * 3).reshape(5, 3)
    states = batch.concat([starts, batch.take(starts, [0, 1])])
    got_rows, got_sums = batch.Reader(params, cfg, TwoRows()).map(kernel, (rows, states))
    assert calls == [2, 2, 2]  # 5 rows in batches of two, the last padded
    np.testing.assert_array_equal(got_rows, rows * 10)
    np.testing.assert_allclose(got_sums, states.wkv.sum(axis=(1, 2, 3, 4)), rtol=1e-6)
