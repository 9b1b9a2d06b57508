"""`python -m rime COMMAND`: build and validate the RIME benchmark, evaluate edit methods on it.

    python -m rime build --seed 0 --out DIR    # DIR/{test,dev,session_test,session_dev}.jsonl, DIR/hf (DatasetDict,
                                               # and parquet + dataset card: datasets.load_dataset)
    python -m rime validate FILE [FILE ...]    # non-zero exit and every problem on stderr if invalid
    python -m rime run                         # the headline job: bundled model, test split -> runs/
    python -m rime run --model rime-tiny --split test --methods delta,null,in_context \
        --filler 0,1,2,4,6 --modes neutral,adversarial --out runs/NAME [--cases FILE] [--limit N]
    python -m rime run --split session         # many-edit sessions (session_test): rows and report.md
    python -m rime run --model CKPT --mesh data=2,model=4    # params split over 4 devices, rows over 2
    python -m rime run ... --coordinator HOST:PORT --num-processes N --process-id I    # on each of N hosts
    python -m rime report runs/NAME            # report.md and the figures' PNGs in the run folder

Each command is one `add_*` function in `COMMANDS`; further commands register the same way.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
from tqdm import tqdm

import convert
from rime.data.errors import CaseError
from rime.data.hub import write_hub
from rime.data.schema import Session
from rime.data.sessions import build_session_splits
from rime.data.splits import DEFAULT_SEED, DEV_SIZE, TEST_SIZE, build_splits, summary
from rime.data.storage import BUNDLED_SPLITS, HF_DIRNAME, check_jsonl, filler_warnings, load, locate, write_build
from rime.data.turns import FILLER_MODES
from rime.eval.protocol import HEADLINE_FILLERS, HEADLINE_METHODS, Spec
from rime.eval.report import headline_summary, write_report
from rime.eval.report import load as load_run
from rime.eval.rows import WRITING, read_config, read_rows
from rime.eval.runner import run, run_sessions
from rime.eval.sessions import session_report, write_session_report
from rwkv_jax.atomic import check_parents, error_line
from rwkv_jax.mesh import DATA, MODEL, make_mesh, parse_mesh

SPLIT_ALIASES = {"session": "session_test"}
INTERRUPTED = 130  # the shell's code for a process ended by SIGINT


def _build(args: argparse.Namespace) -> int:
    check_parents(args.out)
    splits = {**build_splits(args.seed, args.test_size, args.dev_size), **build_session_splits(args.seed)}
    written = write_build(splits, args.out, hf=not args.jsonl_only)
    if not args.jsonl_only:
        write_hub(splits, Path(args.out) / HF_DIRNAME, seed=args.seed)
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
    p = commands.add_parser("build", help="generate the test and dev splits and their session splits")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--test-size", type=int, default=TEST_SIZE)
    p.add_argument("--dev-size", type=int, default=DEV_SIZE)
    p.add_argument("--jsonl-only", action="store_true",
                   help="skip the Hugging Face folder (DatasetDict, parquet and dataset card)")
    p.set_defaults(handler=_build)


def _validate(args: argparse.Namespace) -> int:
    failed = False
    for path in args.files:
        try:
            count, problems = check_jsonl(path)
        except OSError as err:
            count, problems = 0, [f"{path}: cannot read: {err.strerror}"]
        warnings = filler_warnings(path) if count else []
        for message in problems + warnings:
            print(message, file=sys.stderr)
        failed |= bool(problems)
        print(f"{path}: {count} valid cases, {len(problems)} problems"
              + (f", {len(warnings)} warnings" if warnings else ""))
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


def exit_on_interrupt(message: Callable[[], str]) -> None:
    """Makes Ctrl-C end the process promptly with exit code 130, printing `message()`.

    Python runs signal handlers only between bytecodes of the main thread, which may sit for
    minutes inside an XLA compile; and a KeyboardInterrupt raised in the middle of one has crashed
    the process. So the handler does nothing itself: the signal wakes a thread (through
    `signal.set_wakeup_fd`), which waits for any rows write in progress and calls `os._exit`.
    Every appended group is already on disk, and a resumed run continues after it.
    """
    wake, wakeup = socket.socketpair()
    wakeup.setblocking(False)
    signal.set_wakeup_fd(wakeup.fileno(), warn_on_full_buffer=False)
    signal.signal(signal.SIGINT, lambda *_: None)

    def watch(wake: socket.socket, _wakeup: socket.socket) -> None:  # holds both ends open
        while wake.recv(1) != bytes([signal.SIGINT]):
            pass
        with WRITING:
            sys.stderr.write(f"\n{message()}\n")
            sys.stderr.flush()
            os._exit(INTERRUPTED)

    threading.Thread(target=watch, args=(wake, wakeup), name="rime-interrupt", daemon=True).start()


def _run(args: argparse.Namespace) -> int:
    if args.coordinator:
        jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                                   process_id=args.process_id)
    source = args.cases or SPLIT_ALIASES.get(args.split, args.split)
    out = Path(args.out) if args.out else default_out(args.model, source, args.limit)
    if args.interrupts:
        exit_on_interrupt(lambda: f"interrupted: the rows of every finished case are in {out}; "
                          "run the same command to resume")
    methods = _names(args.methods) if args.methods else HEADLINE_METHODS
    fillers = tuple(args.filler if args.filler is not None else HEADLINE_FILLERS)
    spec = Spec.build(methods, fillers=fillers, modes=tuple(_names(args.modes)),
                      max_new_tokens=args.max_new_tokens, seed=args.seed)
    cases = load(source)[: args.limit]
    sessions = [c for c in cases if isinstance(c, Session)]
    if sessions and len(sessions) != len(cases):
        raise ValueError(f"{source} mixes single cases and sessions; a run evaluates one kind")
    mesh = make_mesh(**parse_mesh(args.mesh))
    # split over the model axis as it loads: a model too large for one device never sits whole on one
    model = convert.load(args.model, dtype=args.dtype, sharding=mesh if mesh.shape[MODEL] > 1 else None)
    devices = jax.devices()
    print(f"{out}: {len(cases)} cases from {source}, model {args.model}, {len(devices)} {devices[0].platform} "
          f"device(s) as data={mesh.shape[DATA]} model={mesh.shape[MODEL]}, batch size {args.batch_size}")
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
        if args.scoped and not sessions:
            raise ValueError("--scoped applies to session runs (--split session or session_dev)")
        common = {"batch_size": args.batch_size, "mesh": mesh, "on_start": start, "on_rows": rows}
        if sessions:
            run_sessions(out, model, args.model, cases, source, spec, scoped=args.scoped, **common)
        else:
            run(out, model, args.model, cases, source, spec, **common)
    except CaseError as err:  # refused by `rime.eval.runner.check` before anything was written
        err.where = locate(source, err.case_id)
        raise
    finally:
        for bar in bars:
            bar.close()
    if jax.process_index() != 0:  # process 0 writes the rows and the report
        return 0
    if sessions:
        print(f"wrote {write_session_report(out)}" if added or not (out / "report.md").is_file()
              else f"{out} was already complete; nothing to do")
        print(session_report(read_rows(out)))
        return 0
    if added or not (out / "report.md").is_file():
        print(f"wrote {write_report(out)}")
    else:
        print(f"{out} was already complete; nothing to do")
    print(headline_summary(load_run(out)))
    return 0


def add_run(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("run", help="evaluate edit methods on RIME cases (resumable)")
    p.add_argument("--model", default="rime-tiny", help="bundled model name or checkpoint folder")
    p.add_argument("--dtype", choices=("fp32", "bf16", "int8", "bf16-weights"),
                   help="cast the params (fp32, bf16) or quantize their matrices weight-only (int8, bf16-weights; "
                   "rwkv_jax.quant); default: as stored")
    p.add_argument("--split", default="test", choices=(*BUNDLED_SPLITS, *SPLIT_ALIASES),
                   help="bundled split to evaluate (session: the session_test sessions)")
    p.add_argument("--cases", help="a JSONL file (or save_to_disk folder) of cases instead of a split")
    p.add_argument("--limit", type=_positive, help="only the first N cases")
    p.add_argument("--methods", help="edit methods, NAME or NAME:option=value:... (default: delta,null,in_context;"
                   " none and random always run)")
    p.add_argument("--filler", type=_integers, help="filler turn counts (default: 0,1; the paper's grid: 0,1,2,4,6)")
    p.add_argument("--modes", default=",".join(FILLER_MODES), help="filler modes")
    p.add_argument("--max-new-tokens", type=_positive, default=16, help="answer token budget")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-delta control")
    p.add_argument("--scoped", action="store_true", help="sessions: also run every method but none with scoped "
                   "answering (editing.scoped: the unedited state answers questions routed away from the edits)")
    p.add_argument("--batch-size", type=_positive, default=64,
                   help="rows per jitted call (64 suits a small CPU; use thousands on an accelerator)")
    p.add_argument("--mesh", default="", help="device mesh, e.g. data=2,model=4: rows split over data, the "
                   "params and the wkv heads over model (default: every device on data)")
    p.add_argument("--out", help="run folder (default runs/MODEL-CASES)")
    p.add_argument("--coordinator", help="HOST:PORT of process 0, to run one process per host over every "
                   "host's devices (jax.distributed); process 0 writes the run folder")
    p.add_argument("--num-processes", type=_positive, help="how many processes (with --coordinator)")
    p.add_argument("--process-id", type=int, help="this process's index, 0 to N-1 (with --coordinator)")
    p.set_defaults(handler=_run)


def _report(args: argparse.Namespace) -> int:
    if "sessions" in read_config(args.folder).get("dataset", {}):
        path = write_session_report(args.folder)
        print(session_report(read_rows(args.folder)))
        print(f"wrote {path}")
        return 0
    path = write_report(args.folder)
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


def main(argv: Sequence[str] | None = None, *, interrupts: bool = False) -> int:
    """Runs a command; an expected error (bad input, a locked or mismatched run folder, a file that
    cannot be read) becomes one `error: ...` line and exit code 2, a bug keeps its traceback.
    `interrupts`: Ctrl-C ends a run at once with exit code 130 (`exit_on_interrupt`; the command line
    only, since it takes over the process's SIGINT)."""
    args = parser().parse_args(argv)
    args.interrupts = interrupts
    try:
        return args.handler(args)
    except (ValueError, OSError) as err:
        print(f"error: {error_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(interrupts=True))
