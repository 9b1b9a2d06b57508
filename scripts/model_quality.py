"""The bundled model's quality bar: how well the *unedited* model keeps in-context facts.

    python scripts/model_quality.py --model rime-tiny --out runs/quality

Runs the RIME protocol with only the `none` method (and the protocol's random control) on the dev
and test splits, with 1, 2, 4 and 6 neutral and adversarial filler turns, then prints one markdown
table per split: the share of answers that contain the fact the passage holds (the old value),
with Wilson 95% intervals. Re-running resumes the runs in `--out`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path

import convert
import rime
from rime.data.axes import PROBE_KINDS
from rime.eval.analysis import Rate, rate
from rime.eval.protocol import EDIT, NO_FILLER, TARGET, Spec
from rime.eval.rows import read_rows
from rime.eval.runner import run

BAR = {"target": 0.95, "probes": 0.95, "composition": 0.90, "filler": 0.90, "overwrite": 0.90, "multi_token": 0.90}


def rows_of(rows: Iterable[dict], keep: Callable[[dict], bool]) -> list[dict]:
    return [r for r in rows if r["method"] == "none" and r["variant"] == TARGET and keep(r)]


def quality(rows: list[dict], multi_token: set[str]) -> list[tuple[str, str, Rate, float]]:
    """(measure, scored field, rate, bar) for every line of the quality bar; `multi_token` holds
    the ids of cases whose passage value takes more than one token."""
    at0 = lambda r: r["filler_mode"] == NO_FILLER
    target = rows_of(rows, lambda r: at0(r) and r["kind"] == EDIT)
    lines = [
        ("target query", target, "old_stripped", BAR["target"]),
        ("probe queries", rows_of(rows, lambda r: at0(r) and r["kind"] in PROBE_KINDS), "correct_stripped",
         BAR["probes"]),
        *((f"probe: {kind}", rows_of(rows, lambda r, k=kind: at0(r) and r["kind"] == k), "correct_stripped",
           BAR["probes"]) for kind in PROBE_KINDS),
        ("one-hop composition", [r for r in target if r["params"]["composition_hop"]], "old_stripped",
         BAR["composition"]),
        ("overwritten in the passage (latest value)", [r for r in target if r["params"]["overwrite_count"]],
         "old_stripped", BAR["overwrite"]),
        ("multi-token values", [r for r in target if r["case_id"] in multi_token], "old_stripped",
         BAR["multi_token"]),
    ]
    for mode in rime.FILLER_MODES:
        for k in (1, 2, 4, 6):
            after = rows_of(rows, lambda r, m=mode, k=k: r["filler_mode"] == m and r["filler_turns"] == k
                            and r["kind"] == EDIT)
            lines.append((f"after {k} {mode} filler turns", after, "old_stripped", BAR["filler"]))
    return [(name, field, rate(sel, field), bar) for name, sel, field, bar in lines]


def table(lines: list[tuple[str, str, Rate, float]]) -> str:
    out = ["| measure | rows | accuracy | 95% CI | bar | met |", "|---|---|---|---|---|---|"]
    for name, _, r, bar in lines:
        low, high = r.ci
        out.append(f"| {name} | {r.n} | {r.value:.1%} | {low:.1%}-{high:.1%} | >= {bar:.0%} | "
                   f"{'yes' if r.value >= bar else 'no'} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="rime-tiny")
    ap.add_argument("--dtype", help="as `convert.load`: fp32, bf16, int8 or bf16-weights (default: as stored)")
    ap.add_argument("--out", type=Path, default=Path("runs/quality"))
    ap.add_argument("--splits", default="dev,test")
    ap.add_argument("--limit", type=int, help="only the first N cases of each split (a quick look)")
    args = ap.parse_args()

    model = convert.load(args.model, dtype=args.dtype)
    spec = Spec.build(["none"], fillers=(1, 2, 4, 6))
    for split in args.splits.split(","):
        cases = rime.load(split)[: args.limit]
        folder = run(args.out / split, model, args.model, cases, split, spec)
        multi = {c.id for c in cases if len(model.tokenizer.encode(" " + c.value_old)) > 1}
        print(f"\n### {split} split ({len(cases)} cases, greedy, chat template)\n")
        print(table(quality(read_rows(folder.folder), multi)))


if __name__ == "__main__":
    main()
