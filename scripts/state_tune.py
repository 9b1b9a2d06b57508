"""Tune an RWKV-7's initial state on a JSONL of dialogues (`{"text": ...}` per line), model frozen.

    python scripts/state_tune.py --model rime-tiny --data dialogues.jsonl --run runs/st \
        --steps 200 --out tuned-state.pth

Re-running the same command resumes from the run's latest checkpoint. The result is a state file
(`convert.save_state`): RWKV-PEFT's `time_state` format when only the wkv is tuned (the default),
else the `rwkv` package's state list; `convert.load_state(OUT)` reads it back for editing.
"""

from __future__ import annotations

import argparse
import dataclasses

from tqdm import tqdm

import convert
from convert import load_state, save_state
from editing.state_tune import StateTuneConfig, final_state, read_dialogues, tune_state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="bundled name, rwkv_jax checkpoint or official checkpoint")
    ap.add_argument("--vocab", help="an official checkpoint's vocab (see rwkv_jax/tokenizer.py)")
    ap.add_argument("--data", required=True, help='JSONL of dialogues, {"text": ...} per line')
    ap.add_argument("--run", required=True, help="run directory (checkpoints, settings)")
    ap.add_argument("--out", required=True, help="state file to write (.pth, or .safetensors for wkv only)")
    ap.add_argument("--init", help="start from this state file instead of zeros")
    fields = [f for f in dataclasses.fields(StateTuneConfig) if f.name != "data"]
    for field in fields:  # --steps, --lr, --layers (a span name), --components (comma-separated), ...
        ap.add_argument("--" + field.name.replace("_", "-"), type=type(field.default), default=field.default)
    args = ap.parse_args()

    model = convert.load(args.model, vocab=args.vocab)
    stc = StateTuneConfig(**{f.name: getattr(args, f.name) for f in fields}, data=args.data)
    init = load_state(args.init, model.cfg) if args.init else None
    with tqdm(total=stc.steps, desc="state tuning") as bar:
        for metrics in tune_state(model, read_dialogues(args.data), stc, args.run, init=init):
            bar.n = metrics["step"]
            bar.set_postfix(loss=f"{metrics['loss']:.3f}")
    fmt = "peft" if stc.selection().components == ("wkv",) else "list"
    print(f"wrote {save_state(final_state(model, stc, args.run), args.out, format=fmt)}")


if __name__ == "__main__":
    main()
