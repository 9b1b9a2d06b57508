"""Train (or resume, or fine-tune) an RWKV-7 on the RIME training corpus.

    python scripts/train.py --run runs/rime-tiny --layers 4 --embd 128 --steps 3000 \
        --export rwkv_jax/models/rime-tiny

Re-running the same command resumes from the run's latest checkpoint. `--init-from CKPT` starts
from an existing model (e.g. a converted official checkpoint) with its tokenizer; `--grow-vocab`
first adds the World tokens a changed corpus uses that a compact vocab lacks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from pathlib import Path

from tqdm import tqdm

import rwkv_jax
from rime.chat import TrainingCorpus
from rime.data.corpus import MIXES
from rwkv_jax.checkpoint import resolve, save
from rwkv_jax.params import with_new_tokens
from rwkv_jax.tokenizer import Tokenizer, extend_vocab, save_vocab, subset_vocab, world_tokenizer
from rwkv_jax.train import TrainConfig, final_params, train

VOCAB_SAMPLE = 20_000


def corpus_sample(corpus: TrainingCorpus) -> list[str]:
    """The texts a compact vocab is built from: dialogues and held-out questions of the corpus."""
    rng = random.Random("vocab")
    texts = [corpus.dialogue(rng) for _ in range(VOCAB_SAMPLE)]
    return texts + [p + " " + a for p, a in corpus.questions(rng, VOCAB_SAMPLE)]


def write_vocab(path: Path, tok: Tokenizer, to_world: dict[int, int]) -> None:
    save_vocab(tok, path / "vocab.txt")
    (path / "world_ids.json").write_text(json.dumps({str(k): v for k, v in to_world.items()}))


def build_vocab(corpus: TrainingCorpus, path: Path, name: str) -> Tokenizer:
    """The compact vocab: World tokens the corpus uses (and all bytes), saved with its id map."""
    tok, to_world = subset_vocab(world_tokenizer(), corpus_sample(corpus), name)
    write_vocab(path, tok, to_world)
    return tok


def grow_vocab(corpus: TrainingCorpus, model: rwkv_jax.Model, vocab_dir: Path, path: Path
               ) -> tuple[Tokenizer, rwkv_jax.Config, dict]:
    """The model's compact vocab plus the World tokens the corpus now uses and it lacks, saved to
    `path`, and its params with a row for each (`params.with_new_tokens`)."""
    tok, cfg = model.tokenizer, model.cfg
    ids = vocab_dir / "world_ids.json"
    if not ids.exists() or tok.max_id + 1 != cfg.vocab_size:
        raise SystemExit(f"--grow-vocab needs a compact vocab with its world_ids.json and ids up to "
                         f"{cfg.vocab_size - 1}; {vocab_dir} has neither")
    to_world = {int(k): v for k, v in json.loads(ids.read_text()).items()}
    grown, to_world = extend_vocab(tok, to_world, world_tokenizer(), corpus_sample(corpus))
    added = range(tok.max_id + 1, grown.max_id + 1)
    params, cfg = (with_new_tokens(model.params, cfg, [tok.encode_bytes(grown.id_to_bytes[i]) for i in added])
                   if added else (model.params, cfg))
    write_vocab(path, grown, to_world)
    print(f"vocab grown by {len(added)} tokens: {[grown.token_text(i) for i in added]}")
    return grown, cfg, params


def export(path: Path, params, cfg: rwkv_jax.Config, tok: Tokenizer, vocab_dir: Path) -> None:
    """Writes the model with the World id map of its vocab, read first: `path` may be `vocab_dir`."""
    ids = vocab_dir / "world_ids.json"
    to_world = ids.read_bytes() if ids.exists() else None
    save(path, params, cfg, tok, overwrite=True)
    if to_world is not None:
        (path / "world_ids.json").write_bytes(to_world)
    print(f"exported {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run directory (checkpoints, configs)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--embd", type=int, default=128)
    ap.add_argument("--init-from", help="start from this model (path or bundled name)")
    ap.add_argument("--grow-vocab", action="store_true",
                    help="with --init-from a compact-vocab model: add the World tokens the corpus uses and "
                         "its vocab lacks")
    ap.add_argument("--export", help="write the final model here as an rwkv_jax checkpoint")
    ap.add_argument("--export-latest", action="store_true",
                    help="only write the run's latest checkpoint (or --stop-at's) to --export, e.g. to probe a "
                         "run in progress")
    ap.add_argument("--stop-at", type=int,
                    help="end after this step of the --steps schedule (and export it), as if interrupted there")
    for f in dataclasses.fields(TrainConfig):
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    args = ap.parse_args()
    tc = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})

    run_dir = Path(args.run)
    run_dir.mkdir(parents=True, exist_ok=True)
    if tc.corpus not in MIXES:
        ap.error(f"--corpus must be one of {sorted(MIXES)}")
    if args.stop_at is not None and not 0 < args.stop_at <= tc.steps:
        ap.error(f"--stop-at must be a step of the run, 1 to {tc.steps}")
    corpus = TrainingCorpus(mix=MIXES[tc.corpus])
    if args.init_from:
        base = rwkv_jax.load(args.init_from)
        tok, cfg, params, ref = base.tokenizer, base.cfg, base.params, args.init_from
        vocab_dir = resolve(args.init_from)
        if args.grow_vocab:
            tok, cfg, params = grow_vocab(corpus, base, vocab_dir, run_dir)
            ref, vocab_dir = str(run_dir / "vocab.txt"), run_dir
    elif args.grow_vocab:
        ap.error("--grow-vocab needs --init-from")
    else:
        tok = (Tokenizer.from_file(run_dir / "vocab.txt", name="rime-tiny")
               if (run_dir / "vocab.txt").exists() else build_vocab(corpus, run_dir, "rime-tiny"))
        cfg = rwkv_jax.Config.default(args.layers, args.embd, tok.vocab_size)
        params, ref, vocab_dir = None, str(run_dir / "vocab.txt"), run_dir
    if args.export_latest:
        if not args.export:
            ap.error("--export-latest needs --export DIR")
        export(Path(args.export), final_params(run_dir, cfg, tc, args.stop_at), cfg, tok, vocab_dir)
        return
    print(f"config {cfg}\nvocab {tok.vocab_size} tokens; {tc}")
    bar = tqdm(total=tc.steps, unit="step")
    last, t0, seen = None, time.perf_counter(), 0
    for m in train(corpus, tok, cfg, tc, run_dir, params=params, tokenizer_ref=ref, stop_at=args.stop_at):
        if bar.n == 0:
            bar.update(m["step"] - 1)
            t0 = time.perf_counter()
        seen += m["tokens"]
        post = {"loss": f"{m['loss']:.3f}", "tok/s": f"{seen / (time.perf_counter() - t0):.0f}"}
        if "answer_accuracy" in m:
            post["acc"] = f"{m['answer_accuracy']:.2f}"
            tqdm.write(json.dumps({k: v for k, v in m.items() if k != "params"}))
        bar.set_postfix(post)
        bar.update(1)
        last = m
    bar.close()
    if args.export:
        final = last["params"] if last is not None else final_params(run_dir, cfg, tc, args.stop_at)
        export(Path(args.export), final, cfg, tok, vocab_dir)


if __name__ == "__main__":
    main()
