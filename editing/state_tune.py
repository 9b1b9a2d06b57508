"""State tuning (RWKV-PEFT's method, in JAX): train the initial state, model frozen; the trained
state is an edit of the start every conversation reads from.

Every dialogue starts from the tuned state; the loss is the weighted next-token cross-entropy of
`rwkv_jax.train` (full weight inside assistant replies). Only the state's selected parts (an
`editing.Selection`-style layer span and components; by default every layer's wkv, which is what
an RWKV-PEFT `time_state` file holds) receive updates. Batches are a pure function of (seed,
step), so a run restored from its checkpoint continues exactly as if it had never stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int

from editing.select import Selection
from rwkv_jax.bundle import Model
from rwkv_jax.chat import reply_weights
from rwkv_jax.config import Config
from rwkv_jax.model import forward
from rwkv_jax.params import Params
from rwkv_jax.state import State
from rwkv_jax.tokenizer import Tokenizer
from rwkv_jax.train import Run


@dataclasses.dataclass(frozen=True)
class StateTuneConfig:
    """Settings of a state-tuning run (recorded: a resume must match). `layers` is a layer span
    name of `editing.SPANS`, `components` the state parts trained (comma-separated); `data` names
    the dialogues."""

    batch_size: int = 4
    seq_len: int = 512  # tokens read per dialogue (longer ones are cut)
    steps: int = 200
    lr: float = 1e-2
    clip: float = 1.0
    context_weight: float = 0.25
    seed: int = 0
    checkpoint_every: int = 50
    wkv: str = "chunked"
    layers: str = "all"
    components: str = "wkv"
    data: str = ""

    def __post_init__(self) -> None:
        self.selection()  # validates layers and components

    def selection(self) -> Selection:
        return Selection(layers=self.layers, components=tuple(c.strip() for c in self.components.split(",")))


def read_dialogues(path: str | os.PathLike) -> list[str]:
    """The `text` of every line of a JSONL file (`{"text": "User: ...\\n\\nAssistant: ..."}`, the
    RWKV training-data convention)."""
    texts = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}:{n}: invalid JSON: {e}") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not record["text"]:
            raise ValueError(f'{path}:{n}: expected an object with a non-empty string "text"')
        texts.append(record["text"])
    if not texts:
        raise ValueError(f"{path}: no dialogues")
    return texts


def dialogue_batch(
    tokenizer: Tokenizer, dialogues: Sequence[str], stc: StateTuneConfig, step: int
) -> tuple[Int[np.ndarray, "B T+1"], Float[np.ndarray, "B T"], Int[np.ndarray, " B"]]:
    """tokens (right-padded), weights (0 on padding) and lengths (the tokens each row reads), one
    dialogue per row, deterministic in (seed, step)."""
    rng = random.Random(f"{stc.seed}/{step}")
    T = stc.seq_len + 1
    tokens = np.zeros((stc.batch_size, T), np.int32)
    weights = np.zeros((stc.batch_size, T), np.float32)
    lengths = np.zeros(stc.batch_size, np.int32)
    for row in range(stc.batch_size):
        ids, w = reply_weights(tokenizer, rng.choice(dialogues), stc.context_weight)
        n = min(len(ids), T)
        if n < 2:
            raise ValueError(f"a dialogue of {len(ids)} token(s) has nothing to predict")
        tokens[row, :n], weights[row, :n], lengths[row] = ids[:n], w[:n], n - 1
    return tokens, weights[:, 1:], lengths


def state_loss(state: State, params: Params, cfg: Config, tokens: Int[Array, "B T+1"],
               weights: Float[Array, "B T"], lengths: Int[Array, " B"], wkv: str = "chunked") -> Float[Array, ""]:
    """Weighted next-token cross-entropy of a batch (as `dialogue_batch` makes it), every row read
    from `state` (unbatched)."""

    def nll(t: jax.Array, n: jax.Array) -> jax.Array:
        logits, _ = forward(params, cfg, t[:-1], state, wkv=wkv, length=n)
        logp = jax.nn.log_softmax(logits)
        return -jnp.take_along_axis(logp, t[1:, None], axis=-1)[:, 0]

    per_token = jax.vmap(nll)(tokens, lengths)
    return (per_token * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def optimizer(stc: StateTuneConfig) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(stc.clip), optax.adam(stc.lr))


@functools.lru_cache(maxsize=8)
def _step_fn(cfg: Config, stc: StateTuneConfig):
    """The jitted update, one per (cfg, settings): a resumed run reuses the compiled step."""
    tx = optimizer(stc)
    masks = jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), stc.selection().masks(cfg.n_layer, cfg.n_head))

    @jax.jit
    def step(state, opt_state, params, tokens, weights, lengths):
        loss, grads = jax.value_and_grad(state_loss)(state, params, cfg, tokens, weights, lengths, stc.wkv)
        grads = jax.tree.map(lambda g, m: g * m, grads, masks)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int step counts and floats
            updates, opt_state = tx.update(grads, opt_state, state)
            state = optax.apply_updates(state, updates)
        return state, opt_state, loss

    return step


def tune_state(
    model: Model,
    dialogues: Sequence[str],
    stc: StateTuneConfig,
    directory: str | os.PathLike,
    *,
    init: State | None = None,
    stop_at: int | None = None,
) -> Iterator[dict]:
    """Runs (or resumes) state tuning from `init` (zeros if None), yielding per step
    `{"step", "loss", "state"}`; `stop_at` ends early as if interrupted. The model is frozen."""
    tokenizer = model.text_tokenizer("state tuning on dialogues")
    run = Run(Path(directory), model.cfg, stc)
    run.record(tokenizer.name)
    state = init if init is not None else State.zeros(model.cfg)
    state.check(model.cfg)
    opt_state = optimizer(stc).init(state)
    start, state, opt_state = run.restore(state, opt_state)
    step_fn = _step_fn(model.cfg, stc)
    try:
        for step in range(start, min(stc.steps, stop_at if stop_at is not None else stc.steps)):
            tokens, weights, lengths = dialogue_batch(tokenizer, dialogues, stc, step)
            state, opt_state, loss = step_fn(state, opt_state, model.params, tokens, weights, lengths)
            if (step + 1) % stc.checkpoint_every == 0 or step + 1 == stc.steps:
                run.save(step + 1, state, opt_state)
            yield {"step": step + 1, "loss": float(loss), "state": state}
    finally:
        run.close()


def final_state(model: Model, stc: StateTuneConfig, directory: str | os.PathLike) -> State:
    """The state of a run's latest checkpoint (a finished run's result)."""
    run = Run(Path(directory), model.cfg, stc)
    try:
        template = State.zeros(model.cfg)
        step, state, _ = run.restore(template, optimizer(stc).init(template))
    finally:
        run.close()
    if step == 0:
        raise FileNotFoundError(f"{directory} holds no checkpoint")
    return state
