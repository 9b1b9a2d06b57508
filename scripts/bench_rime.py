"""Rows per second for the RIME protocol: batched, batch size 1 (the same code), and a per-case loop
over the official `rwkv` package (PyTorch CPU) doing the same work on the same model as a `.pth`.

    python scripts/bench_rime.py [--model rime-tiny] [--limit 64] [--sequential-limit 4] [--batch-size 64]

Each variant runs once to compile (or warm up) and once timed. The batched run covers `--limit`
cases; batch size 1 and the PyTorch loop cover the first `--sequential-limit` of them (a rate does
not depend on how many cases it is measured on). The PyTorch loop does every forward pass the
protocol needs (recipient, calibration pairs, correction turns, fillers, questions, greedy answers)
one case and one question at a time, at each `--threads` count; ratios use the faster one.
Prints a markdown table, and how often the two implementations generate the same answer.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch's OpenMP spin-waits on shared cores
os.environ["RWKV_V7_ON"] = "1"  # before `import rwkv.model`: selects the x070 class

import jax  # noqa: E402
import numpy as np  # noqa: E402

import convert
import rime  # noqa: E402
import rwkv_jax  # noqa: E402
from convert import write_pth  # noqa: E402
from editing import CaseEdit  # noqa: E402
from editing.calibration import wrap  # noqa: E402
from editing.select import ALL  # noqa: E402
from rime.eval.evaluate import DEFAULT_BATCH, Evaluator  # noqa: E402
from rime.eval.protocol import (  # noqa: E402
    HEADLINE_FILLERS,
    HEADLINE_METHODS,
    WRONG_ENTITY,
    Branch,
    Spec,
    case_edits,
    filler_text,
    question_prompt,
    questions,
    recipient_text,
)
from rwkv_jax.chat import STOP  # noqa: E402
from rwkv_jax.stops import cut_at_stop  # noqa: E402


def jax_rows(model, cases, spec: Spec, batch_size: int) -> tuple[list[dict], float]:
    """(rows, seconds of the timed pass)."""
    evaluator = Evaluator(model, spec, batch_size=batch_size)
    run = lambda: [row for group in evaluator.run(cases) for _, rows in group for row in rows]
    run()
    start = time.perf_counter()
    rows = run()
    return rows, time.perf_counter() - start


class TorchProtocol:
    """The protocol as a plain loop over the official package: one case, one question at a time."""

    def __init__(self, pth: Path, tokenizer, spec: Spec, threads: int):
        import torch
        from rwkv.model import RWKV

        torch.set_num_threads(threads)
        self.torch, self.tokenizer, self.spec = torch, tokenizer, spec
        self.model = RWKV(model=str(pth.with_suffix("")), strategy="cpu fp32")

    def read(self, text: str, state=None):
        """(last logits, state after the text); the input state is left untouched."""
        state = None if state is None else [t.clone() for t in state]
        with self.torch.no_grad():
            return self.model.forward(self.tokenizer.encode(text), state)

    def delta(self, p_from: str, p_to: str) -> list:
        _, old = self.read(wrap(p_from))
        _, new = self.read(wrap(p_to))
        return [b - a for a, b in zip(old, new, strict=True)]

    def noise_like(self, delta: list, seed: int) -> list:
        """A random direction with the delta's norm per wkv head and per shift vector."""
        generator = self.torch.Generator().manual_seed(seed)
        out = []
        for d in delta:
            noise = self.torch.randn(d.shape, generator=generator)
            dims = (-2, -1) if d.ndim == 3 else (-1,)
            scale = self.torch.linalg.vector_norm(d, dim=dims, keepdim=True)
            out.append(noise * scale / self.torch.linalg.vector_norm(noise, dim=dims, keepdim=True))
        return out

    def edit(self, state: list, branch: Branch, edit: CaseEdit) -> list:
        method = branch.method
        if method.name == "none":
            return state
        if method.name == "in_context":
            return self.read(method.text(edit), state)[1]
        if method.name not in ("delta", "null", "random") or method.select != ALL or method.template != "chat":
            raise ValueError(f"the PyTorch loop runs the headline methods with default options, not {method.label}")
        d = self.delta(*method.pair(edit))
        if method.name == "random":
            d = self.noise_like(d, method.seed)
        return [s + method.alpha * x for s, x in zip(state, d, strict=True)]

    def answer(self, state: list, question) -> tuple[str, float, float]:
        logits, state = self.read(question_prompt(question), state)
        probs = self.torch.softmax(logits.float(), -1)
        p_new, p_old = (float(probs[self.tokenizer.encode(" " + a[0])[0]]) for a in (question.new, question.old))
        out = []
        for _ in range(self.spec.max_new_tokens):
            out.append(int(logits.argmax()))
            if STOP in self.tokenizer.decode(out):
                break
            with self.torch.no_grad():
                logits, state = self.model.forward([out[-1]], state)
        return cut_at_stop(self.tokenizer.decode(out), (STOP,))[0], p_new, p_old

    def rows(self, case) -> dict[tuple, str]:
        """The answer of every row of the case, by (case, method, variant, filler mode, turns, kind, index)."""
        _, recipient = self.read(recipient_text(case))
        out = {}
        for branch in self.spec.branches():
            state = recipient
            entity = case.wrong_entity if branch.variant == WRONG_ENTITY else None
            for step in case_edits(case, entity):
                for edit in step:
                    state = self.edit(state, branch, edit)
            chains = {}
            for setting in self.spec.settings(branch):
                if setting.turns:
                    done, start = chains.get(setting.mode, (0, state))
                    start = self.read(filler_text(case, setting.mode, done, setting.turns), start)[1]
                    chains[setting.mode] = (setting.turns, start)
                else:
                    start = state
                for q in questions(case):
                    key = (case.id, branch.label, branch.variant, setting.mode, setting.turns, q.kind, q.index)
                    out[key] = self.answer(start, q)[0]
        return out


def torch_rows(pth: Path, model, cases, spec: Spec, threads: int) -> tuple[dict[tuple, str], float]:
    protocol = TorchProtocol(pth, model.tokenizer, spec, threads)
    protocol.rows(cases[0])  # warm-up
    start = time.perf_counter()
    rows = {key: text for case in cases for key, text in protocol.rows(case).items()}
    return rows, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="rime-tiny")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=64, help="cases for the batched run")
    ap.add_argument("--sequential-limit", type=int, default=4, help="cases for batch size 1 and PyTorch")
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--threads", default="1,2", help="torch thread counts to measure the PyTorch loop at")
    args = ap.parse_args()

    model = convert.load(args.model)
    cases = rime.load(args.split)[: args.limit]
    few = cases[: args.sequential_limit]
    spec = Spec.build(HEADLINE_METHODS, fillers=HEADLINE_FILLERS, max_new_tokens=args.max_new_tokens)
    device = jax.devices()[0]
    print(f"model {args.model} ({rwkv_jax.model.count_params(model.params):,} params), {device.platform} "
          f"({device.device_kind}), {len(jax.devices())} device(s); methods {[m.label for m in spec.methods]}, "
          f"fillers {list(spec.fillers)}, answers <= {spec.max_new_tokens} tokens")

    results = []
    batched_rows, t = jax_rows(model, cases, spec, args.batch_size)
    results.append((f"rwkv_jax batched (batch {args.batch_size})", len(cases), len(batched_rows), t))
    single_rows, t = jax_rows(model, few, spec, 1)
    results.append(("rwkv_jax batch size 1 (same code)", len(few), len(single_rows), t))
    agreement = None
    if not args.skip_torch:
        with tempfile.TemporaryDirectory() as tmp:
            pth = Path(tmp) / "model.pth"
            write_pth(model.params, pth)
            timed = {n: torch_rows(pth, model, few, spec, n) for n in map(int, args.threads.split(","))}
        for n, (reference, t) in timed.items():
            results.append((f"official rwkv (PyTorch CPU, {n} thread{'s' * (n > 1)}), per-case loop", len(few),
                            len(reference), t))
        reference = min(timed.values(), key=lambda r: r[1])[0]
        ours = {(r["case_id"], r["method"], r["variant"], r["filler_mode"], r["filler_turns"], r["kind"], r["index"]):
                r["generation"] for r in single_rows}
        agreement = np.mean([ours[key] == text for key, text in reference.items()])

    rates = {name: rows / seconds for name, _, rows, seconds in results}
    single = rates[results[1][0]]
    torch_rate = max((rates[name] for name, *_ in results[2:]), default=None)  # the loop at its best setting
    print("\nRatios are against the PyTorch loop at its faster thread count.")
    print("\n| run | cases | rows | seconds | rows/s | vs batch 1 | vs PyTorch loop |\n|---|---|---|---|---|---|---|")
    for name, n_cases, n_rows, seconds in results:
        rate = rates[name]
        vs_torch = f"{rate / torch_rate:.1f}x" if torch_rate else "n/a"
        print(f"| {name} | {n_cases} | {n_rows} | {seconds:.1f} | {rate:.1f} | {rate / single:.1f}x | {vs_torch} |")
    if agreement is not None:
        print(f"\nSame greedy answer in rwkv_jax and the official package: {100 * agreement:.1f}% of rows.")


if __name__ == "__main__":
    main()
