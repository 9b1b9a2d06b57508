"""Closed-form wkv writes: the least-squares constraint, null-space protection, ridge and rank edges."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from editing import writes

N = 16


def normal(key, *shape):
    return jax.random.normal(key, shape, jnp.float32)


@pytest.fixture
def head(key):
    """A random state [N, N], read keys [N, 3], targets [N, 3], preserved keys [N, 4]."""
    k = jax.random.split(key, 4)
    return normal(k[0], N, N), normal(k[1], N, 3), normal(k[2], N, 3), normal(k[3], N, 4)


def test_write_makes_the_keys_read_the_targets(head):
    S, R, Y, _ = head
    dS = writes.write(S, R, Y)
    np.testing.assert_allclose((S + dS) @ R, Y, atol=1e-4)


def test_write_is_the_smallest_change_that_does_it(head):
    # any other solution differs by a matrix that annihilates R, and is larger
    S, R, Y, _ = head
    dS = writes.write(S, R, Y)
    np.testing.assert_allclose(dS @ (jnp.eye(N) - R @ jnp.linalg.pinv(R)), 0.0, atol=1e-4)


def test_protected_keys_read_exactly_as_before(head):
    S, R, Y, K = head
    dS = writes.write(S, R, Y, preserved=K)
    np.testing.assert_allclose(dS @ K, 0.0, atol=1e-4)
    np.testing.assert_allclose((S + dS) @ R, Y, atol=1e-3)  # 3 + 4 keys < N: both hold
    assert not np.allclose(dS, writes.write(S, R, Y), atol=1e-3)


def test_a_key_inside_the_protected_span_cannot_be_written(head):
    S, _, Y, K = head
    dS = writes.write(S, K[:, :1], Y[:, :1], preserved=K)
    np.testing.assert_allclose(dS, 0.0, atol=1e-5)


def test_one_key_gives_a_rank_one_write(head):
    S, R, Y, _ = head
    dS = writes.write(S, R[:, :1], Y[:, :1])
    assert np.linalg.matrix_rank(np.asarray(dS), tol=1e-4) == 1
    np.testing.assert_allclose((S + dS) @ R[:, :1], Y[:, :1], atol=1e-4)


def test_collinear_keys_with_consistent_targets_are_written_once(head):
    S, R, Y, _ = head
    keys = jnp.concatenate([R[:, :1], 2 * R[:, :1]], axis=1)
    targets = S @ keys + jnp.concatenate([Y[:, :1], 2 * Y[:, :1]], axis=1)
    dS = writes.write(S, keys, targets)
    assert np.isfinite(dS).all()
    np.testing.assert_allclose((S + dS) @ keys, targets, atol=1e-3)
    np.testing.assert_allclose(dS, writes.write(S, R[:, :1], targets[:, :1]), atol=1e-4)


def test_ridge_shrinks_the_write_and_vanishes_at_zero(head):
    S, R, Y, _ = head
    exact = writes.write(S, R, Y)
    np.testing.assert_allclose(writes.write(S, R, Y, lam=1e-8), exact, atol=1e-4)
    norms = [float(jnp.linalg.norm(writes.write(S, R, Y, lam=lam))) for lam in (0.0, 1.0, 100.0)]
    assert norms[0] > norms[1] > norms[2] > 0


def test_ridge_on_orthonormal_keys_scales_the_projected_residual(head):
    S, R, Y, _ = head
    Q = jnp.linalg.qr(R)[0]
    dS = writes.write(S, Q, Y, lam=0.5)
    np.testing.assert_allclose(dS, (Y - S @ Q) @ Q.T / 1.5, atol=1e-4)


def test_erase_is_larimars_forgetting(head):
    S, R, _, _ = head
    dS = writes.erase(S, R, lam=0.1)
    want = -S @ R @ jnp.linalg.inv(R.T @ R + 0.1 * jnp.eye(3)) @ R.T
    np.testing.assert_allclose(dS, want, atol=1e-4)
    np.testing.assert_allclose((S + writes.erase(S, R)) @ R, 0.0, atol=1e-4)


def test_batched_heads_equal_a_loop_over_them(key):
    k = jax.random.split(key, 3)
    S, R, Y = normal(k[0], 2, 3, N, N), normal(k[1], 2, 3, N, 2), normal(k[2], 2, 3, N, 2)
    out = writes.write(S, R, Y)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(out[i, j], writes.write(S[i, j], R[i, j], Y[i, j]), atol=1e-5)


def test_truncate_keeps_the_top_singular_pairs(key):
    x = normal(key, 2, N, N)
    one = writes.truncate(x, 1)
    assert [np.linalg.matrix_rank(np.asarray(m), tol=1e-4) for m in one] == [1, 1]
    np.testing.assert_allclose(writes.truncate(x, N), x, atol=1e-4)
    s = np.linalg.svd(np.asarray(x[0]), compute_uv=False)
    np.testing.assert_allclose(np.linalg.norm(x[0] - one[0]), np.sqrt((s[1:] ** 2).sum()), rtol=1e-4)


def test_bad_inputs_are_refused_by_name(head):
    S, R, Y, K = head
    with pytest.raises(ValueError, match="keys is empty"):
        writes.write(S, R[:, :0], Y[:, :0])
    with pytest.raises(ValueError, match="targets holds NaN or Inf"):
        writes.write(S, R, Y.at[0, 0].set(jnp.nan))
    with pytest.raises(ValueError, match="keys must be"):
        writes.write(S, R[:-1], Y)
    with pytest.raises(ValueError, match="preserved keys must be"):
        writes.write(S, R, Y, preserved=K[:, :0])
    with pytest.raises(ValueError, match="lam must be finite"):
        writes.write(S, R, Y, lam=-1.0)
    with pytest.raises(ValueError, match="rank must be >= 1"):
        writes.truncate(S, 0)
