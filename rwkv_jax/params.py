"""The params pytree: layout, shape checks and the official initialisation.

Params are a nested dict of arrays. Per-layer tensors are stacked on a leading `L` axis so the
forward pass can `lax.scan` over layers. Matrices are stored the way they are used, `x @ W`
(`[in, out]`); the official `.pth` stores `nn.Linear` weights as `[out, in]` and the converter
transposes them. Layer 0's value-residual LoRA (`v0, v1, v2`) is never used by the model.

    emb [V, D]            ln0 {weight, bias} [D]       (ln0 acts on the embedding only)
    blocks/ln1, ln2 {weight, bias} [L, D]
    blocks/att/x_r x_w x_k x_v x_a x_g  [L, D]   token-shift lerp coefficients
    blocks/att/w0 a0 v0 [L, D], w1 [L, D, Dw], w2 [L, Dw, D], a1/a2, v1/v2, g1/g2 likewise
    blocks/att/k_k k_a [L, D], r_k [L, H, N]
    blocks/att/receptance key value output [L, D, D]
    blocks/att/ln_x {weight, bias} [L, D]     GroupNorm(H) after the wkv read-out
    blocks/ffn/x_k [L, D], key [L, D, F], value [L, F, D]
    ln_out {weight, bias} [D]        head [D, V]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from rwkv_jax.config import Config
from rwkv_jax.quant import logical

Params = dict[str, Any]


def param_shapes(cfg: Config) -> Params:
    """The shape of every leaf, as a params-shaped tree of tuples."""
    L, D, F, V = cfg.n_layer, cfg.n_embd, cfg.dim_ffn, cfg.vocab_size
    ln = {"weight": (D,), "bias": (D,)}
    ln_l = {"weight": (L, D), "bias": (L, D)}
    att = {name: (L, D) for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "a0", "v0")}
    for name, rank in (("w", cfg.d_decay), ("a", cfg.d_aaa), ("v", cfg.d_mv), ("g", cfg.d_gate)):
        att[f"{name}1"] = (L, D, rank)
        att[f"{name}2"] = (L, rank, D)
    att |= {
        "k_k": (L, D),
        "k_a": (L, D),
        "r_k": (L, cfg.n_head, cfg.head_size),
        "receptance": (L, D, D),
        "key": (L, D, D),
        "value": (L, D, D),
        "output": (L, D, D),
        "ln_x": dict(ln_l),
    }
    return {
        "emb": (V, D),
        "ln0": dict(ln),
        "blocks": {
            "ln1": dict(ln_l),
            "ln2": dict(ln_l),
            "att": att,
            "ffn": {"x_k": (L, D), "key": (L, D, F), "value": (L, F, D)},
        },
        "ln_out": dict(ln),
        "head": (D, V),
    }


def _is_shape(x: Any) -> bool:
    return isinstance(x, tuple)


def abstract_params(cfg: Config, dtype: jnp.dtype = jnp.float32) -> Params:
    """`jax.ShapeDtypeStruct` leaves: a restore target and an `eval_shape` stand-in."""
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s, dtype), param_shapes(cfg), is_leaf=_is_shape
    )


def check_shapes(tree: Any, expected: Any, what: str) -> None:
    """Raises a ValueError naming every missing, unexpected or mis-shaped leaf of `tree` against
    `expected` (a tree of the same structure whose leaves have the wanted shapes). A quantized
    matrix counts as the matrix it stands for."""
    flat = lambda t: jax.tree_util.tree_flatten_with_path(logical(t))[0]
    want = {jax.tree_util.keystr(p): tuple(np.shape(x)) for p, x in flat(expected)}
    got = {jax.tree_util.keystr(p): tuple(np.shape(x)) for p, x in flat(tree)}
    problems = [f"missing {k}" for k in sorted(want.keys() - got.keys())]
    problems += [f"unexpected {k}" for k in sorted(got.keys() - want.keys())]
    problems += [
        f"{k} has shape {got[k]}, expected {want[k]}"
        for k in sorted(want.keys() & got.keys())
        if got[k] != want[k]
    ]
    if problems:
        raise ValueError(f"{what} do not match the config:\n  " + "\n  ".join(problems))


def check_params(params: Params, cfg: Config) -> None:
    """Raises a ValueError naming every missing, unexpected or mis-shaped leaf."""
    check_shapes(params, abstract_params(cfg), "params")


def _orthogonal(key: jax.Array, shape: tuple[int, int], gain: float) -> jax.Array:
    return jax.nn.initializers.orthogonal(scale=gain)(key, shape, jnp.float32)


def _init_layer(cfg: Config, layer: int, key: jax.Array) -> Params:
    """One block, following RWKV-LM's x070 training initialisation."""
    L, D, N = cfg.n_layer, cfg.n_embd, cfg.head_size
    ratio_0_to_1 = layer / max(L - 1, 1)
    ratio_1_to_almost0 = 1.0 - layer / L
    n = np.arange(D, dtype=np.float64)
    ddd = n / D
    linear = n / max(D - 1, 1) - 0.5
    zigzag = ((n % N) - (N - 1) / 2) / ((N - 1) / 2)
    zigzag = zigzag * np.abs(zigzag)
    www = -6 + 6 * (n / max(D - 1, 1)) ** (1 + ratio_0_to_1**0.3)
    keys = iter(jax.random.split(key, 10))

    def uniform(scale: float, shape: tuple[int, ...]) -> jax.Array:
        return jax.random.uniform(next(keys), shape, jnp.float32, -scale, scale)

    def lerp(power: float) -> np.ndarray:
        return 1.0 - ddd ** (power * ratio_1_to_almost0)

    att = {
        "x_r": lerp(0.2), "x_w": lerp(0.9), "x_k": lerp(0.7),
        "x_v": lerp(0.7), "x_a": lerp(0.9), "x_g": lerp(0.2),
        "w0": www + 0.5 + zigzag * 2.5,
        "a0": -0.19 + zigzag * 0.3 + linear * 0.4,
        "v0": 0.73 - linear * 0.4,
        "k_k": 0.71 - linear * 0.1,
        "k_a": np.full(D, 1.02),
        "r_k": np.full((cfg.n_head, N), -0.04),
    }
    for name, rank in (("w", cfg.d_decay), ("a", cfg.d_aaa), ("v", cfg.d_mv), ("g", cfg.d_gate)):
        att[f"{name}1"] = np.zeros((D, rank))
        att[f"{name}2"] = _orthogonal(next(keys), (rank, D), 0.1)
    att |= {
        "receptance": uniform(0.5 / D**0.5, (D, D)),
        "key": uniform(0.05 / D**0.5, (D, D)),
        "value": uniform(0.5 / D**0.5, (D, D)),
        "output": np.zeros((D, D)),
        "ln_x": {"weight": np.full(D, ((1 + layer) / L) ** 0.7), "bias": np.zeros(D)},
    }
    ffn = {
        "x_k": 1.0 - ddd ** (ratio_1_to_almost0**4),
        "key": uniform(0.5 / D**0.5, (D, cfg.dim_ffn)),
        "value": np.zeros((cfg.dim_ffn, D)),
    }
    ones = {"weight": np.ones(D), "bias": np.zeros(D)}
    return {"ln1": ones, "ln2": dict(ones), "att": att, "ffn": ffn}


def init_params(cfg: Config, key: PRNGKeyArray, dtype: jnp.dtype = jnp.float32) -> Params:
    """Fresh params with the official x070 initialisation (trainable from here)."""
    k_emb, k_head, k_layers = jax.random.split(key, 3)
    layers = [_init_layer(cfg, i, k) for i, k in enumerate(jax.random.split(k_layers, cfg.n_layer))]
    blocks = jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x, jnp.float32) for x in xs]), *layers)
    D, V = cfg.n_embd, cfg.vocab_size
    head_gain = 0.5 * (V / D) ** 0.5 if V > D else 0.5
    params = {
        "emb": jax.random.uniform(k_emb, (V, D), jnp.float32, -1e-4, 1e-4),
        "ln0": {"weight": jnp.ones(D), "bias": jnp.zeros(D)},
        "blocks": blocks,
        "ln_out": {"weight": jnp.ones(D), "bias": jnp.zeros(D)},
        "head": _orthogonal(k_head, (D, V), head_gain),
    }
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), params)


def perturbed_params(cfg: Config, seed: int = 0, scale: float = 0.1, dtype: jnp.dtype = jnp.float32) -> Params:
    """The official init plus Gaussian noise on every leaf, for tests and examples: the init zeroes
    each block's output projections, which would leave the logits independent of the state."""
    rng = np.random.default_rng(seed)  # numpy noise: no per-shape compilation
    noisy = jax.tree.map(
        lambda x: np.asarray(x) + scale * rng.standard_normal(x.shape, np.float32),
        init_params(cfg, jax.random.key(seed)),
    )
    return cast_params(noisy, dtype)


def with_new_tokens(params: Params, cfg: Config, pieces: Sequence[Sequence[int]]) -> tuple[Params, Config]:
    """Params for a vocab grown by `len(pieces)` tokens: each new token's embedding and head column
    start as the mean of those of the old tokens it used to be spelled with (`pieces[i]`), so the
    model reads a new token roughly as it read its spelling."""
    if not pieces or any(not p for p in pieces):
        raise ValueError("every new token needs the old tokens that spelled it")
    emb, head = np.asarray(params["emb"]), np.asarray(params["head"])
    rows = [emb[list(p)].mean(0) for p in pieces]
    cols = [head[:, list(p)].mean(1) for p in pieces]
    grown = dict(params, emb=jnp.concatenate([params["emb"], jnp.asarray(np.stack(rows), params["emb"].dtype)]),
                 head=jnp.concatenate([params["head"], jnp.asarray(np.stack(cols, 1), params["head"].dtype)], 1))
    return grown, dataclasses.replace(cfg, vocab_size=cfg.vocab_size + len(pieces))


DTYPES: dict[str, np.dtype] = {
    "fp32": np.dtype(np.float32),
    "bf16": np.dtype(jnp.bfloat16),
    "fp16": np.dtype(np.float16),
}


def cast_params(params: Params, dtype: jnp.dtype) -> Params:
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
