"""`python -m rime COMMAND`: build and validate the RIME benchmark, evaluate edit methods on it.

    python -m rime build --seed 0 --out DIR    # DIR/test.jsonl, DIR/dev.jsonl, DIR/hf (DatasetDict)
    python -m rime validate FILE [FILE ...]    # non-zero exit and every problem on stderr if invalid
    python -m rime run                         # the headline job: bundled model, test split -> runs/
    python -m rime run --model rime-tiny --split test --methods delta,null,in_context \
        --filler 0,1,2,4,6 --modes neutral,adversarial --out runs/NAME [--cases FILE] [--limit N]
    python -m rime report runs/NAME            # report.md and the figures' PNGs in the run folder

Each command is one `add_*` function in `COMMANDS`; further commands register the same way.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rime.sampling import DEFAULT_SEED, DEV_SIZE, TEST_SIZE, build_splits, summary
from rime.storage import BUNDLED_SPLITS, check_jsonl, load, write_build
from rime.turns import FILLER_MODES


def _build(args: argparse.Namespace) -> int:
    splits = build_splits(args.seed, args.test_size, args.dev_size)
    written = write_build(splits, args.out, hf=not args.jsonl_only)
    report = summary(splits)
    grid = report["grid"]
    print(f"grid: {grid['cells']} cells, {grid['admissible']} admissible after the exclusion rules")
    for name, split in report["splits"].items():
        print(f"{name}: {split['size']} cases")
        for axis, counts in split["marginals"].items():
            print(f"  {axis:<20}" + "  ".join(f"{value}={n}" for value, n in counts.items()))
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


def add_build(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("build", help="generate the test and dev splits")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--test-size", type=int, default=TEST_SIZE)
    p.add_argument("--dev-size", type=int, default=DEV_SIZE)
    p.add_argument("--jsonl-only", action="store_true", help="skip the Hugging Face DatasetDict")
    p.set_defaults(handler=_build)


def _validate(args: argparse.Namespace) -> int:
    failed = False
    for path in args.files:
        try:
            count, problems = check_jsonl(path)
        except OSError as err:
            count, problems = 0, [f"{path}: cannot read: {err.strerror}"]
        for problem in problems:
            print(problem, file=sys.stderr)
        failed |= bool(problems)
        print(f"{path}: {count} valid cases, {len(problems)} problems")
    return 1 if failed else 0


def add_validate(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("validate", help="check JSONL files of cases in the paper's format")
    p.add_argument("files", nargs="+")
    p.set_defaults(handler=_validate)


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _integers(text: str) -> list[int]:
    try:
        return [int(part) for part in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def default_out(model: str, source: str, limit: int | None) -> Path:
    """runs/MODEL-CASES[-limitN]: the same command always resumes the same folder."""
    name = f"{Path(model).name}-{Path(source).stem}" + (f"-limit{limit}" if limit else "")
    return Path("runs") / name


def _run(args: argparse.Namespace) -> int:
    import jax
    from tqdm import tqdm

    import rwkv_jax
    from rime.protocol import HEADLINE_FILLERS, HEADLINE_METHODS, Spec
    from rime.report import headline_summary, write_report
    from rime.report import load as load_run
    from rime.rows import ConfigMismatchError
    from rime.runner import run

    source = args.cases or args.split
    out = Path(args.out) if args.out else default_out(args.model, source, args.limit)
    try:
        methods = _names(args.methods) if args.methods else HEADLINE_METHODS
        fillers = tuple(args.filler if args.filler is not None else HEADLINE_FILLERS)
        spec = Spec.build(methods, fillers=fillers, modes=tuple(_names(args.modes)),
                          max_new_tokens=args.max_new_tokens, seed=args.seed)
        cases = load(source)[: args.limit]
        model = rwkv_jax.load(args.model)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    devices = jax.devices()
    print(f"{out}: {len(cases)} cases from {source}, model {args.model}, {len(devices)} {devices[0].platform} "
          f"device(s), batch size {args.batch_size}")
    bars = []
    added = []

    def start(progress) -> None:
        if progress.todo:
            bars.append(tqdm(total=progress.done + progress.todo, initial=progress.done, unit="row",
                             desc="rime run", dynamic_ncols=True))

    def rows(n: int) -> None:
        added.append(n)
        bars[0].update(n)

    try:
        run(out, model, args.model, cases, source, spec, batch_size=args.batch_size, on_start=start, on_rows=rows)
    except ConfigMismatchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        for bar in bars:
            bar.close()
    if added or not (out / "report.md").is_file():
        print(f"wrote {write_report(out)}")
    else:
        print(f"{out} was already complete; nothing to do")
    print(headline_summary(load_run(out)))
    return 0


def add_run(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("run", help="evaluate edit methods on RIME cases (resumable)")
    p.add_argument("--model", default="rime-tiny", help="bundled model name or checkpoint folder")
    p.add_argument("--split", default="test", choices=BUNDLED_SPLITS, help="bundled split to evaluate")
    p.add_argument("--cases", help="a JSONL file (or save_to_disk folder) of cases instead of a split")
    p.add_argument("--limit", type=_positive, help="only the first N cases")
    p.add_argument("--methods", help="edit methods, NAME or NAME:option=value:... (default: delta,null,in_context;"
                   " none and random always run)")
    p.add_argument("--filler", type=_integers, help="filler turn counts (default: 0,1; the paper's grid: 0,1,2,4,6)")
    p.add_argument("--modes", default=",".join(FILLER_MODES), help="filler modes")
    p.add_argument("--max-new-tokens", type=_positive, default=16, help="answer token budget")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-delta control")
    p.add_argument("--batch-size", type=_positive, default=64,
                   help="rows per jitted call (64 suits a small CPU; use thousands on an accelerator)")
    p.add_argument("--out", help="run folder (default runs/MODEL-CASES)")
    p.set_defaults(handler=_run)


def _report(args: argparse.Namespace) -> int:
    from rime.report import headline_summary, write_report
    from rime.report import load as load_run

    try:
        path = write_report(args.folder)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(headline_summary(load_run(args.folder)))
    print(f"wrote {path}")
    return 0


def add_report(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("report", help="write report.md and the figures of a run folder")
    p.add_argument("folder")
    p.set_defaults(handler=_report)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_build, add_validate, add_run, add_report]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rime", description=__doc__.splitlines()[0])
    commands = p.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(commands)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
