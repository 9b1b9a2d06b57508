"""Training: AdamW with warmup-cosine and clipping over the pure forward, resumable with orbax.

Batches are a pure function of (seed, step): the data stream needs no saved state, so a run
restored from a checkpoint continues exactly as if it had never stopped.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int

from rwkv_jax.bundle import Model
from rwkv_jax.chat import reply_weights
from rwkv_jax.checkpoint import StepCheckpoints
from rwkv_jax.config import Config
from rwkv_jax.generate import generate
from rwkv_jax.model import forward
from rwkv_jax.params import Params, init_params
from rwkv_jax.tokenizer import Tokenizer


class Corpus(Protocol):
    """Where training text comes from: one dialogue per call, drawn with the given RNG."""

    def dialogue(self, rng: random.Random) -> str: ...

    def questions(self, rng: random.Random, n: int) -> list[tuple[str, str]]:
        """Held-out (prompt ending in `Assistant:`, expected answer) pairs for exact-match eval."""
        ...


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; `context_weight` scales the loss on tokens outside assistant replies
    (the replies are what the model must learn to produce from its memory)."""

    batch_size: int = 16
    seq_len: int = 512
    steps: int = 2000
    peak_lr: float = 2e-3
    end_lr: float = 2e-5
    warmup: int = 100
    weight_decay: float = 0.01
    clip: float = 1.0
    context_weight: float = 0.25
    seed: int = 0
    eval_every: int = 200
    eval_questions: int = 64
    checkpoint_every: int = 100
    wkv: str = "chunked"
    corpus: str = "default"  # a name the caller's corpus understands (recorded, so a resume must match)

    def __post_init__(self) -> None:
        if not 0 <= self.warmup < self.steps:
            raise ValueError(f"warmup ({self.warmup}) must be shorter than the run ({self.steps} steps)")


def optimizer(tc: TrainConfig) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(0.0, tc.peak_lr, tc.warmup, tc.steps, tc.end_lr)
    decay_mask = lambda params: jax.tree.map(lambda x: x.ndim >= 2, params)
    return optax.chain(
        optax.clip_by_global_norm(tc.clip),
        optax.adamw(schedule, b1=0.9, b2=0.99, weight_decay=tc.weight_decay, mask=decay_mask),
    )


def make_batch(corpus: Corpus, tokenizer: Tokenizer, tc: TrainConfig, step: int
               ) -> tuple[Int[np.ndarray, "B T+1"], Float[np.ndarray, "B T"]]:
    """tokens and weights: dialogues packed into rows, separated by token 0 (end of document),
    deterministic in (seed, step)."""
    rng = random.Random(f"{tc.seed}/{step}")
    T = tc.seq_len + 1
    tokens = np.zeros((tc.batch_size, T), np.int32)
    weights = np.zeros((tc.batch_size, T), np.float32)
    for row in range(tc.batch_size):
        pos = 0
        while pos < T:
            ids, w = reply_weights(tokenizer, corpus.dialogue(rng), tc.context_weight)
            n = min(len(ids), T - pos)
            tokens[row, pos : pos + n], weights[row, pos : pos + n] = ids[:n], w[:n]
            pos += n + 1  # token 0 separates documents; predicting it is weighted like context
            if pos - 1 < T:
                weights[row, pos - 1] = tc.context_weight
    return tokens, weights[:, 1:]


def token_nll(params: Params, cfg: Config, tokens: Int[Array, "B T+1"], wkv: str = "chunked"
              ) -> tuple[Float[Array, "B T"], Float[Array, "B T V"]]:
    """Next-token NLL and logits."""
    logits, _ = jax.vmap(lambda t: forward(params, cfg, t, wkv=wkv))(tokens[:, :-1])
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0], logits


def loss_fn(params: Params, cfg: Config, tokens: Int[Array, "B T+1"], weights: Float[Array, "B T"],
            wkv: str = "chunked") -> Float[Array, ""]:
    """Weighted next-token cross-entropy over a batch."""
    nll, _ = token_nll(params, cfg, tokens, wkv)
    return (nll * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def train_step_fn(cfg: Config, tc: TrainConfig) -> Callable:
    tx = optimizer(tc)

    @jax.jit
    def train_step(params, opt_state, tokens, weights):
        loss, grads = jax.value_and_grad(loss_fn)(params, cfg, tokens, weights, tc.wkv)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int step counts and floats
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
        return params, opt_state, loss, optax.tree.norm(grads)

    return train_step


def answer_accuracy(model: Model, pairs: Sequence[tuple[str, str]], max_new_tokens: int = 24) -> float:
    """Exact match of greedy replies (leading/trailing space stripped) against expected answers."""
    out = generate(model, [p for p, _ in pairs], max_new_tokens=max_new_tokens)
    hits = [text.strip().lower() == answer.strip().lower() for text, (_, answer) in zip(out.texts, pairs)]
    return float(np.mean(hits))


@dataclasses.dataclass
class Run:
    """A training run on disk: `DIR/run.json` (configs) and `DIR/checkpoints/<step>/`."""

    directory: Path
    cfg: Config
    tc: TrainConfig

    def __post_init__(self):
        self.directory = Path(self.directory).absolute()
        self.checkpoints = StepCheckpoints(self.directory / "checkpoints", keep=2)

    def record(self, tokenizer_ref: str) -> None:
        """Writes the run's configs, or refuses to resume a run made with other settings."""
        meta = {"config": dataclasses.asdict(self.cfg), "train": dataclasses.asdict(self.tc), "vocab": tokenizer_ref}
        path = self.directory / "run.json"
        if path.exists():
            old = json.loads(path.read_text())
            if old != meta:
                raise ValueError(f"{self.directory} holds a run with other settings: {old} != {meta}")
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(meta, indent=2, sort_keys=True))

    def restore(self, params: Params, opt_state: Any, step: int | None = None) -> tuple[int, Params, Any]:
        """The latest checkpoint, or the one of `step`."""
        if step is None:
            step = self.checkpoints.latest_step()
            if step is None:
                return 0, params, opt_state
        elif step not in self.checkpoints.steps():
            raise FileNotFoundError(f"{self.directory} keeps no checkpoint of step {step}; it keeps "
                                    f"{self.checkpoints.steps()}")
        restored = self.checkpoints.restore(step, {"params": params, "opt_state": opt_state})
        return step, restored["params"], restored["opt_state"]

    def save(self, step: int, params: Params, opt_state: Any) -> None:
        self.checkpoints.save(step, {"params": params, "opt_state": opt_state})

    def close(self) -> None:
        self.checkpoints.close()


def final_params(directory: str | Path, cfg: Config, tc: TrainConfig, step: int | None = None) -> Params:
    """The parameters of a run's latest checkpoint, or of the one of `step` (e.g. to export a run
    that already finished, or went past the step to export)."""
    run = Run(Path(directory), cfg, tc)
    try:
        template = init_params(cfg, jax.random.key(tc.seed))
        step, params, _ = run.restore(template, optimizer(tc).init(template), step)
    finally:
        run.close()
    if step == 0:
        raise FileNotFoundError(f"{directory} holds no checkpoint")
    return params


def train(
    corpus: Corpus,
    tokenizer: Tokenizer,
    cfg: Config,
    tc: TrainConfig,
    directory: str | Path,
    *,
    params: Params | None = None,
    tokenizer_ref: str = "",
    stop_at: int | None = None,
) -> Iterator[dict]:
    """Runs (or resumes) training, yielding a metrics dict per step; the caller drives progress
    display. `params` starts from a given model (fine-tuning) instead of a fresh init.
    `stop_at` ends early (at a checkpoint boundary or not) as if interrupted."""
    run = Run(Path(directory), cfg, tc)
    run.record(tokenizer_ref or tokenizer.name)
    if params is None:
        params = init_params(cfg, jax.random.key(tc.seed))
    opt_state = optimizer(tc).init(params)
    start, params, opt_state = run.restore(params, opt_state)
    step_fn = train_step_fn(cfg, tc)
    eval_rng = random.Random(f"{tc.seed}/eval")
    eval_pairs = corpus.questions(eval_rng, tc.eval_questions) if tc.eval_every else []
    try:
        for step in range(start, min(tc.steps, stop_at if stop_at is not None else tc.steps)):
            tokens, weights = make_batch(corpus, tokenizer, tc, step)
            params, opt_state, loss, gnorm = step_fn(params, opt_state, tokens, weights)
            metrics = {"step": step + 1, "loss": float(loss), "grad_norm": float(gnorm),
                       "tokens": int(tokens[:, :-1].size)}
            if tc.eval_every and (step + 1) % tc.eval_every == 0:
                metrics["answer_accuracy"] = answer_accuracy(Model(params, cfg, tokenizer), eval_pairs)
            if (step + 1) % tc.checkpoint_every == 0 or step + 1 == tc.steps:
                run.save(step + 1, params, opt_state)
            metrics["params"] = params
            yield metrics
    finally:
        run.close()
