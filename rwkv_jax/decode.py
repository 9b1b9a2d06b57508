"""The decode step on params and a state laid out for a jitted decode loop.

`forward` scans over stacked layers: inside a decode loop that slices every layer's weights and
state out of the stacks, and restacks the state, on every token. A loop instead makes
`decode_params` and `split_state` once before it and carries per-layer tuples through
`decode_step`, which runs the same `rwkv_jax.model.block` layer by layer.
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int

from rwkv_jax.config import Config
from rwkv_jax.model import F32, block, check_state, embed, layer_norm
from rwkv_jax.params import Params, abstract_params, check_params, check_shapes
from rwkv_jax.quant import Narrow, is_narrow, rows_product
from rwkv_jax.state import SplitState, join_state
from rwkv_jax.wkv import wkv_scan


@flax.struct.dataclass
class DecodeParams:
    """The params as a decode loop reads them, made once before it by `decode_params`.

    Attributes:
      emb: the embeddings, and ln0 their LayerNorm `{weight, bias}` `[D]`, as in the params.
      blocks: L per-layer dicts, each a layer of the params' `blocks` (no layer axis).
      ln_out: `{weight, bias}` `[D]`.
      head_vd: the head, transposed: XLA's CPU dot multiplies `[B, D]` by this matrix's
        transpose 2-3x faster than by a `[D, V]` one at V = 65536 (a quantized head is held that
        way already).
    """

    emb: Float[Array, "V D"] | Narrow
    ln0: Params
    blocks: tuple[Params, ...]
    ln_out: Params
    head_vd: Float[Array, "V D"] | Narrow

    def check(self, cfg: Config) -> None:
        """Raises a ValueError naming every missing, unexpected or mis-shaped leaf."""
        expected = jax.eval_shape(functools.partial(decode_params, cfg=cfg), abstract_params(cfg))
        check_shapes(self, expected, "decode params")


def decode_params(params: Params, cfg: Config) -> DecodeParams:
    """The params (as `forward` takes them) laid out for `decode_step`."""
    check_params(params, cfg)
    blocks, head = params["blocks"], params["head"]
    # the barrier keeps the transposed copy from being folded back into the dot
    head_vd = head.replace(transposed=False) if is_narrow(head) else lax.optimization_barrier(head.T)
    return DecodeParams(
        emb=params["emb"], ln0=params["ln0"],
        blocks=tuple(jax.tree.map(lambda a, i=i: a[i], blocks) for i in range(cfg.n_layer)),
        ln_out=params["ln_out"], head_vd=head_vd,
    )


@functools.partial(jax.jit, static_argnames=("cfg",))
def decode_step(params: DecodeParams, cfg: Config, token: Int[Array, ""],
                state: SplitState) -> tuple[Float[Array, " V"], SplitState]:
    """One decoding step: token -> logits (float32), new state; `rwkv_jax.step`'s
    numbers, with layers unrolled in Python (nothing is sliced or restacked per call)."""
    if not isinstance(state, SplitState):
        raise TypeError(f"state must be an rwkv_jax.state.SplitState (see split_state), got {type(state).__name__}")
    state.check(cfg)
    check_state(jax.eval_shape(join_state, state), cfg)  # and no batch axes
    x = embed(params.emb, params.ln0, jnp.reshape(token, (1,)))
    v_first, layers = jnp.zeros_like(x), []
    for i, p in enumerate(params.blocks):
        out = block(p, cfg, x, v_first, state.layer(i), is_first=i == 0, valid=None, length=None,
                    recurrence=wkv_scan)
        x, v_first = out.x, out.v_first
        layers.append(out.state)
    h = layer_norm(x[0], params.ln_out)
    logits = rows_product(h, params.head_vd).astype(F32)
    return logits, SplitState.of_layers(layers)
