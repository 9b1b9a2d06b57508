"""`rwkv_jax` as an lm-eval-harness model: `lm_eval --model rwkv_jax --model_args model=NAME,state=FILE`.

It reads every request from a start state (zeros, or a state file: an edited or tuned state is
evaluated as it is), so a benchmark can score a model *and* what its state holds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

import convert
from convert import load_state
from rwkv_jax.batch import broadcast, pad
from rwkv_jax.generate import PROMPT_BUCKET, generate
from rwkv_jax.sampling import GREEDY, Sampling
from rwkv_jax.state import State
from rwkv_lm_eval.scores import continuation_logprobs

END_OF_TEXT = 0  # the World vocabulary's document separator: what an empty context reads


@register_model("rwkv_jax")
class RwkvJaxLM(LM):
    """model: a bundled name or a checkpoint path (anything `convert.load` takes); state: a
    `State`, or a state file (`convert.load_state` formats), read before every request; batch_size:
    requests per jitted call. lm-eval's `device` and `max_batch_size` are accepted and unused: JAX
    places arrays itself."""

    def __init__(self, model: str = "rime-tiny", state: State | str | None = None, batch_size: int | str = 16,
                 device: str | None = None, max_batch_size: int | None = None, **unknown) -> None:
        super().__init__()
        if unknown:
            raise TypeError(f"rwkv_jax: unknown model_args {sorted(unknown)}")
        self.model = convert.load(model) if isinstance(model, str) else model
        self.tokenizer = self.model.text_tokenizer("score text with lm-eval")
        if isinstance(state, str):
            state = load_state(state, self.model.cfg)
        if state is not None:
            state.check(self.model.cfg)
            if state.batch_shape != ():
                raise ValueError(f"state must be one unbatched state, got batch shape {state.batch_shape}")
        self.state = state
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")

    def _context(self, text: str) -> list[int]:
        return self.tokenizer.encode(text) or [END_OF_TEXT]

    def _score(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """Scores (context ids, continuation ids) pairs, longest first so every batch pads little."""
        out: list[tuple[float, bool] | None] = [None] * len(pairs)
        for rows in _batches(sorted(range(len(pairs)), key=lambda i: -sum(map(len, pairs[i]))), self.batch_size):
            seqs = [pairs[i][0] + pairs[i][1] for i in rows]
            starts = [len(pairs[i][0]) for i in rows]
            fill = self.batch_size - len(rows)  # full batches: one compiled shape per length bucket
            tokens, lengths = pad(seqs + seqs[:1] * fill, PROMPT_BUCKET)
            logp, greedy = continuation_logprobs(
                self.model.params, self.model.cfg, jnp.asarray(tokens), jnp.asarray(lengths),
                jnp.asarray(starts + starts[:1] * fill, np.int32),
                broadcast(self.state if self.state is not None else State.zeros(self.model.cfg),
                          len(seqs) + fill))
            for i, lp, g in zip(rows, np.asarray(logp), np.asarray(greedy)):
                out[i] = (float(lp), bool(g))
        return out

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        pairs = []
        for context, continuation in (r.args for r in requests):
            ids = self.tokenizer.encode(continuation)
            if not ids:
                raise ValueError(f"continuation {continuation!r} encodes to no tokens")
            pairs.append((self._context(context), ids))
        return self._score(pairs)

    def loglikelihood_rolling(self, requests) -> list[float]:
        """The whole string in one pass after end-of-text: a recurrent model needs no windows."""
        return [lp for lp, _ in self._score([([END_OF_TEXT], self.tokenizer.encode(text) or [END_OF_TEXT])
                                             for (text,) in (r.args for r in requests)])]

    def generate_until(self, requests) -> list[str]:
        """Requests that share stop strings, budget and sampling decode together, in batches."""
        groups: dict[tuple, list[int]] = {}
        contexts = []
        for i, (context, kwargs) in enumerate(r.args for r in requests):
            kwargs = dict(kwargs)
            until = kwargs.pop("until", None) or ["\n\n"]
            until = (until,) if isinstance(until, str) else tuple(until)
            seed = int(kwargs.pop("seed", 0))
            setting = (until, int(kwargs.pop("max_gen_toks", 256)), _sampling(kwargs), seed)
            groups.setdefault(setting, []).append(i)
            contexts.append(self._context(context))
        out: list[str | None] = [None] * len(contexts)
        for (until, max_new, sampling, seed), rows in groups.items():
            for batch in _batches(rows, self.batch_size):
                gen = generate(self.model, [contexts[i] for i in batch], max_new_tokens=max_new,
                               sampling=sampling, key=jax.random.key(seed), state=self.state, stop=until)
                for i, text in zip(batch, gen.texts):
                    out[i] = text
        return out


def _sampling(kwargs: dict) -> Sampling:
    """lm-eval's `do_sample` / `temperature` / `top_p` / `top_k` as a `Sampling`; greedy unless asked."""
    do_sample = kwargs.pop("do_sample", False)
    temperature = float(kwargs.pop("temperature", 1.0 if do_sample else 0.0))
    top_p, top_k = float(kwargs.pop("top_p", 1.0)), int(kwargs.pop("top_k", 0) or 0)
    if kwargs:
        raise ValueError(f"rwkv_jax: unsupported generation arguments {sorted(kwargs)}")
    if not do_sample or temperature == 0:
        return GREEDY
    return Sampling(temperature=temperature, top_p=top_p, top_k=top_k)


def _batches(rows: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(rows), size):
        yield rows[i: i + size]
