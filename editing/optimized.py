"""`optimized`: the gradient reference, a wkv edit found by a few Adam steps.

It shows how far a state edit can go at all, and so what the closed-form methods leave on the
table. Per case, `dS` over the selected layers' wkv starts at zero and takes `steps` Adam steps
on

    -log p(" " + value_new | own question, S + dS)  +  kl * mean_o KL(p(. | q_o, S) || p(. | q_o, S + dS))

where the first term is teacher-forced over the new value's tokens and `q_o` is the same question
about `others` people from the bundled name list (their next-token distributions should not move).
Every case's optimisation runs in one vmapped `lax.scan`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from editing import algebra
from editing.keys import other_people, question
from editing.methods import CaseEdit, GroupMethod, ModelLike, _check_many, reader_of, register
from editing.select import Selection
from rwkv_jax.batch import Reader, encode, pad
from rwkv_jax.config import Config
from rwkv_jax.model import forward
from rwkv_jax.params import Params
from rwkv_jax.state import State


@functools.partial(jax.jit, static_argnames=("cfg", "steps", "lr", "kl"))
def _optimize(params: Params, cfg: Config, tokens, lengths, prompt_lengths, others, other_lengths,
              states: State, *, mask: jax.Array, steps: int, lr: float, kl: float) -> jax.Array:
    # tokens [B, T] own question + new value, lengths [B], prompt_lengths [B] (the question's
    # part); others [B, O, T2], other_lengths [B, O]; states [B]; mask [L, 1, 1, 1] -> dS [B, L, H, N, N]
    def one(t, n, n_prompt, o, o_n, s):
        logp = lambda wkv, t, n: jax.nn.log_softmax(
            forward(params, cfg, t, s.replace(wkv=wkv), length=n, wkv="scan")[0])
        ref = jax.vmap(lambda t, n: logp(s.wkv, t, n)[jnp.maximum(n - 1, 0)])(o, o_n)  # [O, V]
        positions = jnp.arange(t.shape[0])
        answer = (positions >= n_prompt - 1) & (positions < n - 1)  # logits that predict the value

        def loss(dS):
            wkv = s.wkv + jnp.where(mask, dS, 0.0)
            lp = logp(wkv, t, n)
            nll = -jnp.sum(jnp.where(answer, jnp.take_along_axis(lp, jnp.roll(t, -1)[:, None], 1)[:, 0], 0.0))
            now = jax.vmap(lambda t, n: logp(wkv, t, n)[jnp.maximum(n - 1, 0)])(o, o_n)
            drift = jnp.sum(jnp.exp(ref) * (ref - now), axis=-1).mean()
            return nll + kl * drift

        opt = optax.adam(lr)

        def step(carry, _):
            dS, opt_state = carry
            grad = jax.grad(loss)(dS)
            with jax.numpy_dtype_promotion("standard"):  # optax mixes int step counts and floats
                updates, opt_state = opt.update(grad, opt_state)
            return (optax.apply_updates(dS, updates), opt_state), None

        dS = jnp.zeros_like(s.wkv)
        (dS, _), _ = jax.lax.scan(step, (dS, opt.init(dS)), None, length=steps)
        return jnp.where(mask, dS, 0.0)

    return jax.vmap(one)(tokens, lengths, prompt_lengths, others, other_lengths, states)


@register
@dataclasses.dataclass(frozen=True)
class OptimizedEdit(GroupMethod):
    """Adam on `dS` (see the module docstring). steps: Adam steps (1..50); lr: its learning rate;
    kl: the weight of the other people's drift; others: how many other people; layers: the layers
    whose wkv the edit may change."""

    name: ClassVar[str] = "optimized"
    steps: int = 30
    lr: float = 0.05
    kl: float = 1.0
    others: int = 4
    layers: str | tuple[int, ...] | tuple[bool, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or not 1 <= self.steps <= 50:
            raise ValueError(f"steps must be an int in 1..50, got {self.steps!r}")
        if not isinstance(self.others, int) or self.others < 1:
            raise ValueError(f"others must be an int >= 1, got {self.others!r}")
        for field in ("lr", "kl"):
            value = float(getattr(self, field))
            if not np.isfinite(value) or value < 0 or (field == "lr" and value == 0):
                raise ValueError(f"{field} must be finite and {'> 0' if field == 'lr' else '>= 0'}, "
                                 f"got {getattr(self, field)!r}")
            object.__setattr__(self, field, value)
        object.__setattr__(self, "layers", Selection(layers=self.layers).layers)

    def apply_many(self, states: State, model: ModelLike, cases: Sequence[CaseEdit],
                   reader: Reader | None = None) -> State:
        _check_many(states, cases)
        tok, cfg, B, O = model.tokenizer, model.cfg, len(cases), self.others
        prompts = [question(c.entity, c.property) for c in cases]
        tokens, lengths = pad(encode(tok, [p + " " + c.value_new for p, c in zip(prompts, cases, strict=True)],
                                     cfg.vocab_size))
        prompt_lengths = np.array([len(tok.encode(p)) for p in prompts], np.int32)
        others, other_lengths = pad(encode(
            tok, [question(o, c.property) for c in cases for o in other_people(c.entity, c.people, O)], cfg.vocab_size))
        others, other_lengths = others.reshape(B, O, -1), other_lengths.reshape(B, O)
        select = Selection(self.layers, "wkv")
        mask = jnp.asarray(select.layer_mask(cfg.n_layer))[:, None, None, None]
        kernel = functools.partial(_optimize, mask=mask, steps=self.steps, lr=self.lr, kl=self.kl)
        dS = reader_of(model, reader).map(kernel, (tokens, lengths, prompt_lengths, others, other_lengths, states))
        zeros = jax.tree.map(jnp.zeros_like, states)
        return algebra.apply(states, zeros.replace(wkv=dS), select=select)
