"""Running many-edit sessions: the passages read once, the actions applied one after another to the
live state, filler turns read after each, then every query asked from the final state.

A method sees each action only as its `CaseEdit` (entity, property, values, the calibration pair
and the passages as transcript), never the session's queries. An "edit" is the method's
`apply_many` with its record kept (`editing.apply_recorded`); a "revert" takes the reverted edit's
record back out of the live state (`editing.revert`: exact where nothing changed since, first order
elsewhere), so every method gets the same undo; an "erase" runs the library's `erase` method
whatever the method under test, since the others have no way to remove a fact, and nothing for
`none`. Sessions go through in groups: the i-th action of every session that has one in one call.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import jax
import numpy as np

from editing import CaseEdit, Edit, EditMethod, apply_recorded, get_method, revert
from editing.scoped import THRESHOLD, key_bytes, route, scope
from rime.chat import chat_text
from rime.data.schema import Session
from rime.data.turns import filler_messages, passage_messages
from rime.eval.analysis import Rate
from rime.eval.evaluate import Evaluator
from rime.eval.figures import DPI, LIFELONG_FILE, lifelong, plt
from rime.eval.protocol import Question, case_edit, question_prompt, scoped_label
from rime.eval.rows import read_rows
from rime.eval.scoring import score, wilson
from rwkv_jax.batch import put_rows, take
from rwkv_jax.state import State

ERASER = "erase"
ROUTED_ROLES = ("reliability", "retention", "erased")  # questions about a change still in effect


@dataclasses.dataclass(frozen=True)
class _Job:
    session: Session
    question: Question
    state: int


def session_text(session: Session) -> str:
    """The passages as the chat turns the live state reads first."""
    return chat_text(passage_messages(session.passages))


def action_edit(session: Session, i: int) -> CaseEdit:
    """Action i as the editing registry takes it. An erase has no new value: its `CaseEdit` carries
    the old one in both places, and the eraser reads only the entity and the property."""
    e = session.edits[i]
    pair = dataclasses.replace(e.edit, dst=e.edit.dst or e.edit.source)
    return case_edit(e.entity, e.property, e.value_old, e.value_new or e.value_old, pair, session_text(session))


def in_effect(session: Session) -> list[int]:
    """The actions whose change the final state still holds: every edit no later action reverts,
    and every erase."""
    reverted = {e.reverts for e in session.edits if e.action == "revert"}
    return [i for i, e in enumerate(session.edits) if e.action == "erase" or (e.action == "edit" and i not in reverted)]


def questions(session: Session) -> list[Question]:
    """Every query, scored against the answer key; `old` is the value the passages stated."""
    stated = {f.key: f.value for f in session.facts}
    return [Question(q.role, i, q.query, (q.expected,), (stated[q.key],), (q.expected,))
            for i, q in enumerate(session.queries)]


class SessionEvaluator:
    """Answers every query of every session after a method's actions, through an `Evaluator`'s
    reader and answer kernel.

    `scoped` (`editing.scoped`) also keeps each session's unedited state (the passages and filler
    turns, no action) and answers a question from the edited state only when it routes there: its
    stream after the last block, read from the unedited state, points along the (person, property)
    key of an edit or erase still in effect in its session (cosine above `threshold`). The rows record the
    routing (`routed`) and whether the question is about such a fact (`route_expected`); every row
    records what answering its session keeps (`kept_bytes`).
    """

    def __init__(self, evaluator: Evaluator, method: EditMethod, *, scoped: bool = False,
                 threshold: float = THRESHOLD):
        self.evaluator, self.method, self.scoped, self.threshold = evaluator, method, scoped, threshold
        self.eraser = None if method.name == "none" else get_method(ERASER)
        self.label = scoped_label(method.label) if scoped else method.label
        self.state_bytes = State.zeros(evaluator.model.cfg).nbytes

    def run(self, sessions: Sequence[Session]) -> Iterator[list[dict]]:
        """Group by group, the rows of the group's sessions (one per query, in session order)."""
        size = self.evaluator.group_size
        for start in range(0, len(sessions), size):
            yield self.rows(sessions[start:start + size])

    def final_states(self, group: Sequence[Session], acting: bool = True, passages: State | None = None) -> State:
        """Host states `[G]` after each session's passages, actions (unless not `acting`) and filler
        turns; `passages` is the state after the passages, when it has been read already."""
        ev = self.evaluator
        states = self.passage_states(group) if passages is None else passages
        records: list[dict[int, Edit]] = [{} for _ in group]  # per session: action -> its row's record
        for i in range(max(len(s.edits) for s in group)):
            live = [g for g, s in enumerate(group) if i < len(s.edits)]
            for action in ("edit", "erase", "revert") if acting else ():
                rows = [g for g in live if group[g].edits[i].action == action]
                if rows:
                    states = self._act(states, group, rows, i, action, records)
            talk = [g for g in live if group[g].edits[i].fillers]
            if talk:
                texts = [chat_text(filler_messages(group[g].edits[i].fillers)) for g in talk]
                states = put_rows(states, talk, ev.read(texts, take(states, talk)))
        return states

    def _act(self, states: State, group: Sequence[Session], rows: list[int], i: int, action: str,
             records: list[dict[int, Edit]]) -> State:
        before = take(states, rows)
        if action == "revert":
            record = jax.tree.map(lambda *xs: np.stack(xs), *(records[g][group[g].edits[i].reverts] for g in rows))
            return put_rows(states, rows, jax.tree.map(np.asarray, revert(before, record)))
        method = self.method if action == "edit" else self.eraser
        if method is None:
            return states
        cases = [action_edit(group[g], i) for g in rows]
        after, record = apply_recorded(method, before, self.evaluator.model, cases, reader=self.evaluator.reader)
        for j, g in enumerate(rows):
            records[g][i] = jax.tree.map(lambda x, j=j: np.asarray(x[j]), record)
        return put_rows(states, rows, jax.tree.map(np.asarray, after))

    def passage_states(self, group: Sequence[Session]) -> State:
        """Host states `[G]` after each session's passages."""
        ev = self.evaluator
        return ev.read([session_text(s) for s in group], State.zeros(ev.model.cfg))

    def rows(self, group: Sequence[Session]) -> list[dict]:
        """The rows of one group of sessions, evaluated together."""
        read = self.passage_states(group)
        pool = self.final_states(group, passages=read)
        jobs = [_Job(s, q, g) for g, s in enumerate(group) for q in questions(s)]
        routed = None
        if self.scoped:
            unedited = self.final_states(group, acting=False, passages=read)
            routed = self._route(group, jobs, unedited)
            pool = jax.tree.map(lambda e, u: np.concatenate([e, u]), pool, unedited)
            jobs = [dataclasses.replace(j, state=j.state if r else len(group) + j.state)
                    for j, r in zip(jobs, routed, strict=True)]
        answers = self.evaluator.answer(jobs, pool)
        return [self._row(job, ids, stopped, None if routed is None else bool(routed[i]))
                for i, (job, (ids, stopped, _)) in enumerate(zip(jobs, answers, strict=True))]

    def kept_bytes(self, session: Session) -> int:
        """What answering the session's questions keeps: the live state, and when scoped the unedited
        state and a key and centre per action in effect."""
        if not self.scoped:
            return self.state_bytes
        return 2 * self.state_bytes + len(in_effect(session)) * key_bytes(self.evaluator.model.cfg)

    def _route(self, group: Sequence[Session], jobs: Sequence[_Job], unedited: State) -> np.ndarray:
        """Per job, whether its question goes to the edited state (see the class docstring)."""
        sim = self.similarity(group, [question_prompt(j.question) for j in jobs], [j.state for j in jobs], unedited)
        return sim.max(axis=-1, initial=-np.inf) > self.threshold

    def similarity(self, group: Sequence[Session], prompts: Sequence[str], asked: Sequence[int], unedited: State,
                   *, layer: int | None = None) -> np.ndarray:
        """`[B, E]`: each question's (a chat prompt, asked in session `asked[b]` of `group`) cosine with
        the routing key of every action in effect in `group`, each read from its session's unedited
        state (`[G]`); -inf against another session's actions. `layer`: `editing.scoped.scope`'s."""
        cases, owners = [], []
        for g, s in enumerate(group):
            for i in in_effect(s):
                cases.append(action_edit(s, i))
                owners.append(g)
        if not cases:
            return np.full((len(prompts), 0), -np.inf)
        ev = self.evaluator
        keys = scope(take(unedited, owners), ev.model, cases, layer=layer, reader=ev.reader)
        _, sim = route(keys, ev.model, prompts, take(unedited, asked), reader=ev.reader,
                       owners=(np.array(owners), np.array(asked)))
        return np.asarray(sim)

    def _row(self, job: _Job, ids: list[int], stopped: bool, routed: bool | None) -> dict:
        s, q = job.session, job.question
        text = self.evaluator.text(ids)
        scored = score(text, q.expected, q.old, q.new)
        row = {"case_id": s.id, "method": self.label, "facts": len(s.facts), "actions": len(s.edits),
               "role": q.kind, "index": q.index, "query": q.text, "expected": q.expected[0], "stated": q.old[0],
               "generation": text, "stopped": stopped, "correct": scored.correct_stripped,
               "stated_kept": scored.old_stripped, "kept_bytes": self.kept_bytes(s),
               "state_bytes": self.state_bytes}
        if routed is not None:
            row |= {"routed": routed, "route_expected": q.kind in ROUTED_ROLES}
        return row


def _rate(hits: Sequence[bool]) -> str:
    lo, hi = wilson(sum(hits), len(hits))
    return f"{sum(hits) / len(hits):.0%} [{lo:.0%}, {hi:.0%}] (n={len(hits)})" if hits else "-"


def recall_table(rows: Sequence[dict]) -> str:
    """Markdown: per fact count, how often the unedited model (`none` rows) answers with the value the
    passages stated, over all its sessions and per number of (no-op) actions, whose filler turns it
    still reads; 95% Wilson intervals."""
    mine = [r for r in rows if r["method"] == "none"]
    actions = sorted({r["actions"] for r in mine})
    lines = ["| facts | sessions | unedited recall [95% CI] (n) | " + " | ".join(f"K={k}" for k in actions) + " |",
             "|---" * (3 + len(actions)) + "|"]
    for f in sorted({r["facts"] for r in mine}):
        of = [r for r in mine if r["facts"] == f]
        cells = [_rate([r["stated_kept"] for r in of if r["actions"] == k]) for k in actions]
        lines.append(f"| {f} | {len({r['case_id'] for r in of})} | {_rate([r['stated_kept'] for r in of])} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


COLUMNS = ("reliability: every edited fact (the last edit and the earlier ones) answered with its new value; "
           "retention: the earlier edits alone; locality: untouched facts kept; reverted: the restored value; "
           "erased: the erased value gone; after revert: the edited facts of sessions that reverted another edit.")


def method_table(rows: Sequence[dict]) -> str:
    """Markdown: per method and action count, each role's success rate with a 95% Wilson interval
    (the columns: `COLUMNS`)."""
    def hits(mine: list[dict], roles: tuple[str, ...], erased: bool = False) -> list[bool]:
        return [r["correct"] != erased for r in mine if r["role"] in roles]

    reverting = {r["case_id"] for r in rows if r["role"] == "reverted"}
    lines = ["| method | actions | reliability | retention | locality | reverted | erased | after revert |",
             "|---|---|---|---|---|---|---|---|"]
    for method in dict.fromkeys(r["method"] for r in rows):
        for k in sorted({r["actions"] for r in rows if r["method"] == method}):
            mine = [r for r in rows if r["method"] == method and r["actions"] == k]
            kept = [r for r in mine if r["case_id"] in reverting]
            cells = [hits(mine, ("reliability", "retention")), hits(mine, ("retention",)), hits(mine, ("locality",)),
                     hits(mine, ("reverted",)), hits(mine, ("erased",), erased=True),
                     hits(kept, ("reliability", "retention"))]
            lines.append(f"| {method} | {k} | " + " | ".join(_rate(c) for c in cells) + " |")
    return "\n".join(lines)


CURVE_ROLES = {"reliability": ("reliability", "retention"), "retention": ("retention",), "locality": ("locality",)}
FLOOR = 0.8  # the reliability a method must keep; the report names the K where it falls below


def lifelong_curves(rows: Sequence[dict]) -> dict[str, dict[str, list[tuple[int, Rate]]]]:
    """{curve: {method: [(actions, Rate)]}}: reliability, retention and locality against the number
    of actions, one point per measured action count (retention has none at K = 1)."""
    curves: dict[str, dict[str, list[tuple[int, Rate]]]] = {c: {} for c in CURVE_ROLES}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        for curve, roles in CURVE_ROLES.items():
            points = []
            for k in sorted({r["actions"] for r in mine}):
                hits = [bool(r["correct"]) for r in mine if r["actions"] == k and r["role"] in roles]
                if hits:
                    points.append((k, Rate(sum(hits), len(hits))))
            curves[curve][method] = points
    return curves


def first_below(points: Sequence[tuple[int, Rate]], floor: float = FLOOR) -> int | None:
    """The fewest actions at which the rate is below `floor`; None if it never is."""
    return next((k for k, r in points if r.value < floor), None)


def floor_table(rows: Sequence[dict]) -> str:
    """Markdown: per method, the K at which reliability first falls below FLOOR, and at the largest K
    each curve's value."""
    curves = lifelong_curves(rows)
    lines = [f"| method | first K below {FLOOR:.0%} reliability | largest K | reliability | retention | locality |",
             "|---|---|---|---|---|---|"]
    for method, points in curves["reliability"].items():
        if method == "none" or not points:
            continue
        k_max = points[-1][0]
        last = {c: dict(curves[c][method]).get(k_max) for c in CURVE_ROLES}
        below = first_below(points)
        lines.append(f"| {method} | {below if below is not None else f'none up to {k_max}'} | {k_max} | "
                     + " | ".join(str(last[c]) if last[c] else "-" for c in CURVE_ROLES) + " |")
    return "\n".join(lines)


def routing_table(rows: Sequence[dict]) -> str:
    """Markdown: per scoped method and action count, routing precision (of the questions sent to
    the edited state, the share about a change in effect) and recall (of those, the share sent)."""
    lines = ["| method | actions | routing precision | routing recall |", "|---|---|---|---|"]
    for method in dict.fromkeys(r["method"] for r in rows if "routed" in r):
        for k in sorted({r["actions"] for r in rows if r["method"] == method}):
            mine = [r for r in rows if r["method"] == method and r["actions"] == k]
            sent = [r["route_expected"] for r in mine if r["routed"]]
            wanted = [r["routed"] for r in mine if r["route_expected"]]
            lines.append(f"| {method} | {k} | {_rate(sent)} | {_rate(wanted)} |")
    return "\n".join(lines)


def cost_table(rows: Sequence[dict]) -> str:
    """Markdown: per method and action count, what answering a session keeps (`kept_bytes`: the live
    state, and for a scoped method the unedited state and the keys), mean over sessions, in KiB and
    in live states (`state_bytes`)."""
    kept = {(r["method"], r["actions"], r["case_id"]): (r["kept_bytes"], r["state_bytes"])
            for r in rows if "kept_bytes" in r}
    actions = sorted({a for _, a, _ in kept})
    lines = ["| method | " + " | ".join(f"K={k}" for k in actions) + " |", "|---" * (1 + len(actions)) + "|"]
    for method in dict.fromkeys(m for m, _, _ in kept):
        cells = [_kept([v for (m, a, _), v in kept.items() if m == method and a == k]) for k in actions]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _kept(sizes: Sequence[tuple[int, int]]) -> str:
    # (kept, live state) bytes per session -> their means
    if not sizes:
        return "-"
    kib, states = sum(b for b, _ in sizes) / 1024 / len(sizes), sum(b / s for b, s in sizes) / len(sizes)
    return f"{kib:,.1f} KiB ({states:.2f} states)"


def session_report(rows: Sequence[dict]) -> str:
    """The markdown report of a session run: unedited recall per fact count, then every method."""
    parts = ["# Many-edit sessions"]
    if any(r["method"] == "none" for r in rows):
        parts += ["## Unedited recall per fact count", recall_table(rows)]
    parts += ["## Per method and number of actions", COLUMNS, method_table(rows),
              "## How far each method goes", floor_table(rows),
              *(["## State kept per session", cost_table(rows)] if any("kept_bytes" in r for r in rows) else []),
              *(["## Routing of the scoped methods", routing_table(rows)] if any("routed" in r for r in rows) else []),
              f"![reliability, retention and locality against the number of actions]({LIFELONG_FILE})"]
    return "\n\n".join(parts) + "\n"


def write_session_report(folder: str | os.PathLike) -> Path:
    """Writes `report.md` of a session run folder from its rows, and the lifelong figure."""
    rows = read_rows(folder)
    path = Path(folder) / "report.md"
    fig = lifelong(lifelong_curves(rows))
    fig.savefig(Path(folder) / LIFELONG_FILE, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    path.write_text(session_report(rows), encoding="utf-8")
    return path
