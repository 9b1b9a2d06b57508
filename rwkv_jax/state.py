"""The recurrent state: the fixed-size memory that replaces a KV cache, and the object users edit."""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from rwkv_jax.config import Config


@flax.struct.dataclass
class State:
    """Everything an RWKV-7 remembers about the tokens it has read.

    All fields are float32, whatever the params dtype, and may carry leading batch axes `B...`
    (a batch of states is one `State` whose leaves have those extra leading axes).

    Attributes:
      wkv: `[B..., L, H, N, N]` per-layer, per-head matrix memory in the official
        `[value, key]` order: row i is a value channel, column j a key channel. The read-out is
        `y = wkv @ r`; the write is `wkv <- wkv diag(w) + (wkv a) b^T + v k^T`.
      att_shift: `[B..., L, D]` the previous token's ln1 output (time-mix token shift).
      ffn_shift: `[B..., L, D]` the previous token's ln2 output (channel-mix token shift).
    """

    wkv: jax.Array
    att_shift: jax.Array
    ffn_shift: jax.Array

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


COMPONENTS = ("wkv", "att_shift", "ffn_shift")
