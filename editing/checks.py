"""Argument checks run before the jitted kernels, so the kernels stay check-free.

Shape checks work on tracers too (shapes are static), so the public operations can be called
inside a user's `jit` or `vmap`; the finiteness check needs values and is skipped for tracers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rwkv_jax.state import COMPONENTS, State


class StateMismatchError(ValueError):
    """States or deltas that cannot be combined: different models, batch shapes or dtypes."""


class NonFiniteDeltaError(ValueError):
    """A delta holds NaN or Inf; adding it would poison the state for every later token."""


def _leaves(x: State, name: str) -> dict[str, jax.Array]:
    if not isinstance(x, State):
        raise TypeError(f"{name} must be a rwkv_jax.State, got {type(x).__name__}")
    return {c: getattr(x, c) for c in COMPONENTS}


def model_shape(x: State, name: str = "state") -> tuple[int, int, int, int]:
    """(L, H, N, D) of the model a state belongs to; raises if its leaves disagree."""
    leaves = _leaves(x, name)
    for c, leaf in leaves.items():
        if leaf.dtype != jnp.float32:
            raise StateMismatchError(f"{name}.{c} is {leaf.dtype}; states are float32")
    wkv, att, ffn = leaves["wkv"], leaves["att_shift"], leaves["ffn_shift"]
    if wkv.ndim < 4 or att.ndim < 2 or att.shape != ffn.shape:
        raise StateMismatchError(f"{name} is not a State: {_shapes(x)}")
    L, H, N, N2 = wkv.shape[-4:]
    D = att.shape[-1]
    if N != N2 or att.shape[-2] != L or H * N != D or wkv.shape[:-4] != att.shape[:-2]:
        raise StateMismatchError(f"{name} is not a State: {_shapes(x)}")
    return L, H, N, D


def batch_shape(*named: tuple[str, State]) -> tuple[int, ...]:
    """The common batch shape of states of one model; raises unless they broadcast."""
    shapes = {name: model_shape(x, name) for name, x in named}
    if len(set(shapes.values())) > 1:
        raise StateMismatchError(
            "states come from different models: "
            + ", ".join(f"{n} has (L, H, N, D)={s}" for n, s in shapes.items())
        )
    batches = {name: x.batch_shape for name, x in named}
    try:
        return tuple(np.broadcast_shapes(*batches.values()))
    except ValueError:
        raise StateMismatchError(
            "batch shapes do not broadcast: "
            + ", ".join(f"{n} {b}" for n, b in batches.items())
        ) from None


@jax.jit
def _finite_layers(x: State) -> dict[str, jax.Array]:
    # [B..., L, ...] -> [L]: is every entry of the layer finite?
    def per_layer(leaf, axis):
        by_layer = jnp.moveaxis(leaf, axis, 0)
        return jnp.isfinite(by_layer).reshape(by_layer.shape[0], -1).all(axis=1)

    return {c: per_layer(getattr(x, c), State.layer_axis(c)) for c in COMPONENTS}


def finite(delta: State, name: str = "delta") -> None:
    """Raises `NonFiniteDeltaError` naming the components and layers that hold NaN or Inf."""
    if any(isinstance(leaf, jax.core.Tracer) for leaf in _leaves(delta, name).values()):
        return
    problems = [f"{c} in layers {np.flatnonzero(~ok).tolist()}"
                for c, ok in jax.device_get(_finite_layers(delta)).items() if not ok.all()]
    if problems:
        raise NonFiniteDeltaError(f"{name} holds NaN or Inf: {'; '.join(problems)}")


def _shapes(x: State) -> str:
    return ", ".join(f"{c}={tuple(getattr(x, c).shape)}" for c in COMPONENTS)
