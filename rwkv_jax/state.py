"""The recurrent state: the fixed-size memory that replaces a KV cache, and the object users edit."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.struct
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from rwkv_jax.config import Config

# The axes of one layer of each field, after the layer axis: wkv [H, N, N], shifts [D]; the
# leading _HEAD_AXES of them index heads (a wkv head is the finest unit edits address).
_CORE_RANK = {"wkv": 3, "att_shift": 1, "ffn_shift": 1}
_HEAD_AXES = {"wkv": 1, "att_shift": 0, "ffn_shift": 0}


@flax.struct.dataclass
class State:
    """Everything an RWKV-7 remembers about the tokens it has read.

    All fields are float32, whatever the params dtype, and may carry leading batch axes `*B`
    (a batch of states is one `State` whose leaves have those extra leading axes).

    Attributes:
      wkv: per-layer, per-head matrix memory in the official `[value, key]` order: row i is a
        value channel, column j a key channel. The read-out is `y = wkv @ r`; the write is
        `wkv <- wkv diag(w) + (wkv a) b^T + v k^T`.
      att_shift: the previous token's ln1 output (time-mix token shift).
      ffn_shift: the previous token's ln2 output (channel-mix token shift).
    """

    wkv: Float[Array, "*B L H N N"]
    att_shift: Float[Array, "*B L D"]
    ffn_shift: Float[Array, "*B L D"]

    @classmethod
    def components(cls) -> tuple[str, ...]:
        """The field names, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @staticmethod
    def core_rank(component: str) -> int:
        """How many axes one layer of a field has (after the layer axis)."""
        return _CORE_RANK[component]

    @staticmethod
    def layer_axis(component: str) -> int:
        """The layer axis of a field, counted from the end (batch axes lead)."""
        return -_CORE_RANK[component] - 1

    @staticmethod
    def unit_axes(component: str) -> tuple[int, ...]:
        """The trailing axes within one unit of a field (a wkv head's matrix, a shift vector)."""
        return tuple(range(_HEAD_AXES[component] - _CORE_RANK[component], 0))

    @staticmethod
    def has_heads(component: str) -> bool:
        """Whether a field has a head axis (wkv, right after the layer axis)."""
        return _HEAD_AXES[component] > 0

    @staticmethod
    def per_unit(component: str, values: jax.Array) -> jax.Array:
        """Values `[..., L]` (`[..., L, H]` for wkv), one per unit, shaped to broadcast against
        the field."""
        return values.reshape(values.shape + (1,) * len(State.unit_axes(component)))

    @classmethod
    def zeros(cls, cfg: Config, batch_shape: tuple[int, ...] = ()) -> State:
        L, H, N, D = cfg.n_layer, cfg.n_head, cfg.head_size, cfg.n_embd
        return cls(
            wkv=jnp.zeros((*batch_shape, L, H, N, N), jnp.float32),
            att_shift=jnp.zeros((*batch_shape, L, D), jnp.float32),
            ffn_shift=jnp.zeros((*batch_shape, L, D), jnp.float32),
        )

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.att_shift.shape[:-2]

    @property
    def nbytes(self) -> int:
        """Bytes the state's arrays take, every row of a batch together."""
        return sum(x.nbytes for x in (self.wkv, self.att_shift, self.ffn_shift))

    def matches(self, cfg: Config) -> bool:
        """Whether this state (with any batch axes) belongs to a model of this config."""
        L, H, N, D = cfg.n_layer, cfg.n_head, cfg.head_size, cfg.n_embd
        b = self.batch_shape
        return (
            self.wkv.shape == (*b, L, H, N, N)
            and self.att_shift.shape == (*b, L, D)
            and self.ffn_shift.shape == (*b, L, D)
        )

    def check(self, cfg: Config) -> None:
        if not self.matches(cfg):
            raise ValueError(
                f"state shapes wkv={self.wkv.shape}, att_shift={self.att_shift.shape}, "
                f"ffn_shift={self.ffn_shift.shape} do not belong to a model with L={cfg.n_layer}, "
                f"H={cfg.n_head}, N={cfg.head_size}, D={cfg.n_embd}"
            )


COMPONENTS = State.components()


@flax.struct.dataclass
class SplitState:
    """A `State` held as one array per layer in every field (any batch axes kept), made by
    `split_state`: what a decode loop carries, so that a step never slices or restacks the whole
    state (75 MB at batch 32 of a 0.1B model).

    Attributes:
      wkv: L arrays.
      att_shift: L arrays.
      ffn_shift: L arrays.
    """

    wkv: tuple[Float[Array, "*B H N N"], ...]
    att_shift: tuple[Float[Array, "*B D"], ...]
    ffn_shift: tuple[Float[Array, "*B D"], ...]

    @classmethod
    def of_layers(cls, layers: Sequence[State]) -> SplitState:
        """One `State` per layer, each without the layer axis, as a `SplitState`."""
        return cls(**{c: tuple(getattr(s, c) for s in layers) for c in COMPONENTS})

    def layer(self, i: int) -> State:
        """Layer i as a `State` without the layer axis."""
        return State(**{c: getattr(self, c)[i] for c in COMPONENTS})

    def check(self, cfg: Config) -> None:
        """Refuses a split state of another model, naming the shapes (see `State.check`)."""
        if not all(isinstance(getattr(self, c), tuple) and len(getattr(self, c)) == cfg.n_layer
                   for c in COMPONENTS):
            raise ValueError(f"a split state must hold {cfg.n_layer} per-layer arrays in every field")
        jax.eval_shape(join_state, self).check(cfg)


def split_state(state: State) -> SplitState:
    """The state as one array per layer in every field."""
    return SplitState(**{c: tuple(jnp.moveaxis(getattr(state, c), State.layer_axis(c), 0))
                         for c in COMPONENTS})


def join_state(split: SplitState) -> State:
    """The inverse of `split_state`."""
    return State(**{c: jnp.stack(getattr(split, c), axis=State.layer_axis(c)) for c in COMPONENTS})

