"""Synthetic key-value recall: how fast a small RWKV-7 learns to look a value up by its key.

    python scripts/recall_control.py --context-weight 0 --key-gap 3
    python scripts/recall_control.py --context-weight 0.25 --key-gap 3
    python scripts/recall_control.py --context-weight 0 --key-gap 3 --adjacent-share 0.5

A sequence states 8 (key, value) pairs, each key followed by `--key-gap` random filler tokens and
then its value, and then asks 8 keys drawn with replacement: `Q key <query-gap fillers> A value`.
Only the asked values are predictable. `--context-weight` is the loss weight of every other token,
as `rwkv_jax.train` applies it outside assistant replies. `--adjacent-share` states a share of the
pairs with each value right after its key (for the first `--adjacent-steps` steps), as a curriculum.
Prints the loss and the greedy accuracy on the values asked about pairs with the full gap, and the
accuracy on those asked about adjacent pairs, every 50 steps. Chance is ln 190 (accuracy 0.5%); a
model that copies one of the sequence's 8 values without knowing which key it belongs to reaches ln
8 (12.5%), so only a loss below ln 8 shows binding. A control for training runs that fail to bind
values to names, separating the data and loss design from the model's capacity.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import optax

import rwkv_jax
from rwkv_jax.train import TrainConfig, loss_fn, optimizer, token_nll

VOCAB, PAIRS, QUERY, ANSWER = 512, 8, 1, 2
KEYS, VALUES, FILLERS = (10, 200), (200, 390), (400, 500)


def batch(rng: np.random.Generator, size: int, key_gap: int, query_gap: int, context_weight: float,
          adjacent_share: float = 0.0, key_tokens: int = 1, key_pieces: int = KEYS[1] - KEYS[0]):
    """tokens `[B, T + 1]`, training weights `[B, T]`, and masks `[B, T]` of the answers about pairs
    stated with the full gap and of those about adjacent pairs. Adjacent pairs (`adjacent_share`)
    move the gap's fillers before the key, so that every sequence is as long. A key is `key_tokens`
    tokens from `key_pieces` ones, so that its last token alone may not tell it apart, as with
    names of several tokens."""
    tokens, answers, gapped = [], [], []
    for _ in range(size):
        codes = rng.choice(key_pieces**key_tokens, PAIRS, replace=False)
        keys = KEYS[0] + codes[:, None] // key_pieces ** np.arange(key_tokens)[::-1] % key_pieces  # [PAIRS, n]
        values = rng.integers(*VALUES, PAIRS)
        gaps = np.where(rng.random(PAIRS) < adjacent_share, 0, key_gap)
        seq, scored, full = [], [], []
        for key, value, gap in zip(keys, values, gaps):
            seq += [*rng.integers(*FILLERS, key_gap - gap), *key, *rng.integers(*FILLERS, gap), value]
        scored += [False] * len(seq)
        full += [False] * len(seq)
        for i in rng.integers(0, PAIRS, PAIRS):
            seq += [QUERY, *keys[i], *rng.integers(*FILLERS, query_gap), ANSWER, values[i]]
            scored += [False] * (query_gap + key_tokens + 2) + [True]
            full += [False] * (query_gap + key_tokens + 2) + [gaps[i] == key_gap]
        tokens.append(seq)
        answers.append(scored)
        gapped.append(full)
    tokens, answers, gapped = np.array(tokens, np.int32), np.array(answers)[:, 1:], np.array(gapped)[:, 1:]
    weights = np.where(answers, 1.0, context_weight).astype(np.float32)
    return tokens, weights, gapped.astype(np.float32), (answers & ~gapped).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--embd", type=int, default=128)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--peak-lr", type=float, default=2e-3)
    ap.add_argument("--key-gap", type=int, default=3)
    ap.add_argument("--query-gap", type=int, default=0)
    ap.add_argument("--context-weight", type=float, default=0.0)
    ap.add_argument("--adjacent-share", type=float, default=0.0, help="share of pairs with no gap")
    ap.add_argument("--key-tokens", type=int, default=1)
    ap.add_argument("--key-pieces", type=int, default=KEYS[1] - KEYS[0], help="tokens that keys are made of")
    ap.add_argument("--adjacent-steps", type=int, help="steps that have adjacent pairs (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    cfg = rwkv_jax.Config.default(args.layers, args.embd, VOCAB)
    tx = optimizer(TrainConfig(steps=args.steps, warmup=20, peak_lr=args.peak_lr))
    params = rwkv_jax.init_params(cfg, jax.random.key(args.seed))
    opt_state = tx.init(params)

    def answer_metrics(params, tokens, gapped, adjacent):
        nll, logits = token_nll(params, cfg, tokens)
        right = logits.argmax(-1) == tokens[:, 1:]
        return (nll * gapped).sum() / gapped.sum(), (right * gapped).sum() / gapped.sum(), \
            (right * adjacent).sum() / adjacent.sum()

    @jax.jit
    def train_step(params, opt_state, tokens, weights, gapped, adjacent):
        grads = jax.grad(loss_fn)(params, cfg, tokens, weights)
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, *answer_metrics(params, tokens, gapped, adjacent)

    rng, t0 = np.random.default_rng(args.seed), time.perf_counter()
    print(f"chance {np.log(VALUES[1] - VALUES[0]):.2f}; copying without binding {np.log(PAIRS):.2f}")
    adjacent_steps = args.steps if args.adjacent_steps is None else args.adjacent_steps
    for step in range(args.steps):
        share = args.adjacent_share if step < adjacent_steps else 0.0
        data = batch(rng, args.batch_size, args.key_gap, args.query_gap, args.context_weight, share,
                     args.key_tokens, args.key_pieces)
        params, opt_state, loss, accuracy, adjacent = train_step(params, opt_state, *data)
        if step % 50 == 0 or step == args.steps - 1:
            elapsed = time.perf_counter() - t0
            print(f"step {step:4d}  gap-{args.key_gap} answers: loss {float(loss):.2f} accuracy {float(accuracy):.1%}"
                  f"  adjacent answers: accuracy {float(adjacent):.1%}  ({elapsed:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
