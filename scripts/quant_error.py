"""Logit error of weight-only quantized params against fp32, on the bundled model and a random 0.1B shape.

    python scripts/quant_error.py [--model rime-tiny] [--cases 32] [--tokens 128]

For bfloat16 and int8 (`rwkv_jax.quant.quantize`): the largest absolute logit difference from the
fp32 model over every position of the texts (prefill) and over a batch-1 decode step from each
text's state (the native product), that difference relative to the largest fp32 logit, and how
often the top token agrees. Bundled model: the passages and first question of `--cases` test
cases as chat prompts. Random 0.1B shape (L=12, D=768, V=65536): `--tokens` random tokens.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import convert
import rime
from rime.chat import chat_text
from rime.data.turns import passage_messages
from rwkv_jax import Config, forward, quant
from rwkv_jax.chat import chat_prompt
from rwkv_jax.decode import decode_params, decode_step
from rwkv_jax.params import perturbed_params
from rwkv_jax.state import split_state


def errors(params, cfg: Config, texts: list[np.ndarray]) -> dict[str, tuple[float, float, float]]:
    """{dtype: (max abs error, relative to the max |logit|, top-1 agreement)} over prefill and decode."""
    f = jax.jit(lambda p, t: forward(p, cfg, t))
    out = {}
    for dtype in quant.DTYPES:
        q = quant.quantize(params, dtype)
        dq = decode_params(q, cfg)
        worst = peak = 0.0
        agree = total = 0
        for tokens in texts:
            t = jnp.asarray(tokens)
            want, state = f(params, t)
            got, _ = f(q, t)
            step_want, _ = forward(params, cfg, t[-1:], state)
            step_got, _ = decode_step(dq, cfg, t[-1], split_state(state))
            pairs = [(np.asarray(want), np.asarray(got)), (np.asarray(step_want[0])[None], np.asarray(step_got)[None])]
            for a, b in pairs:
                worst = max(worst, float(np.abs(a - b).max()))
                peak = max(peak, float(np.abs(a).max()))
                agree += int((a.argmax(-1) == b.argmax(-1)).sum())
                total += a.shape[0]
        out[dtype] = (worst, worst / peak, agree / total)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="rime-tiny")
    ap.add_argument("--cases", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()

    model = convert.load(args.model)
    cases = rime.load("test")[: args.cases]
    texts = [np.asarray(model.tokenizer.encode(chat_text(passage_messages(c.recipient.passages))
                                               + chat_prompt([("user", c.queries[0])])), np.int32) for c in cases]
    cfg = Config.default(12, 768, 65536)
    random = perturbed_params(cfg, scale=0.02)
    tokens = [np.random.default_rng(0).integers(1, cfg.vocab_size, args.tokens).astype(np.int32)]
    print("| model | weights | max abs logit error | relative to max logit | top-1 agreement |")
    print("|---|---|---|---|---|")
    for name, (params, c, t) in {args.model: (model.params, model.cfg, texts),
                                 "random 0.1B shape": (random, cfg, tokens)}.items():
        for dtype, (err, rel, agree) in errors(params, c, t).items():
            print(f"| {name} | {dtype} | {err:.4f} | {rel:.2e} | {agree:.1%} |")


if __name__ == "__main__":
    main()
