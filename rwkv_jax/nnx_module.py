"""RWKV-7 as a `flax.nnx` module, for users who compose it into Flax models.

A thin door over the functional model: the weights are `nnx.Param`s in the same nested layout
as `rwkv_jax.params`, the call is `rwkv_jax.forward` on them, and the recurrent state goes in and
comes out explicitly (it is not module state, so it can be edited and transplanted as usual).
The project's own hot paths (generation, editing, RIME) stay on the plain jitted functions:
`nnx.jit` adds about 3 ms per call over `jax.jit` on a dict.

    model = RWKV7.from_model(rwkv_jax.load("rime-tiny"))
    logits, state = model(tokens, state)                    # tokens [T] -> logits [T, V]
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
"""

from __future__ import annotations

import jax
from flax import nnx
from jaxtyping import Array, Float, Int

from rwkv_jax.bundle import Model
from rwkv_jax.config import Config
from rwkv_jax.model import forward
from rwkv_jax.params import Params, check_params
from rwkv_jax.state import State
from rwkv_jax.wkv import Impl


class RWKV7(nnx.Module):
    """The weights of one RWKV-7 as `nnx.Param`s; calling it runs `rwkv_jax.forward`."""

    def __init__(self, cfg: Config, params: Params, *, wkv: Impl = "chunked"):
        check_params(params, cfg)
        self.cfg = cfg
        self.wkv = wkv
        self.params = nnx.data(jax.tree.map(nnx.Param, params))

    @classmethod
    def from_model(cls, model: Model, *, wkv: Impl = "chunked") -> RWKV7:
        return cls(model.cfg, model.params, wkv=wkv)

    def weights(self) -> Params:
        """The params as the plain pytree the functional API takes."""
        return jax.tree.map(lambda p: p[...], self.params, is_leaf=lambda p: isinstance(p, nnx.Param))

    def __call__(
        self, tokens: Int[Array, " T"], state: State | None = None, *, length: Int[Array, ""] | int | None = None
    ) -> tuple[Float[Array, "T V"], State]:
        """tokens from `state` (zeros if None) -> (float32 logits, new state)."""
        return forward(self.weights(), self.cfg, tokens, state, wkv=self.wkv, length=length)
