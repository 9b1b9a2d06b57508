"""Running the protocol: cases in, scored rows out, in batches.

Cases go through in groups. For a group: every recipient is read once (one batched kernel call);
each branch state is the recipient state edited by its method (states are values, so branching is
free); filler turns are read on top, k turns continuing from the state after fewer; then every
question of every (branch, setting) is answered in fixed-size batches sorted by prompt length.
`batch_size=1` runs exactly this code one row at a time: the sequential baseline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from rime.data.schema import Case
from rime.eval import kernels
from rime.eval.kernels import Layout
from rime.eval.protocol import (
    NO_FILLER,
    WRONG_ENTITY,
    Branch,
    Question,
    Setting,
    Spec,
    case_edits,
    filler_text,
    question_prompt,
    questions,
    recipient_text,
)
from rime.eval.scoring import score
from rwkv_jax.batch import Reader, concat, encode, pad, put_rows, take
from rwkv_jax.bundle import Model
from rwkv_jax.chat import STOP
from rwkv_jax.sampling import count_weights
from rwkv_jax.state import State
from rwkv_jax.stops import cut_at_stop, stop_tables

# Measured fastest on the 2-core CPU for the bundled model (states stay in cache); accelerators want
# far larger batches.
DEFAULT_BATCH = 64
# A group holds batch_size // GROUP_DIVISOR cases, ~115 rows each in the headline job: a group fills
# ~14 answer batches, so its one partial batch wastes little.
GROUP_DIVISOR = 8


@dataclasses.dataclass(frozen=True)
class _Job:
    """One question to answer from one state of the group's pool."""

    case: Case
    branch: Branch
    setting: Setting
    question: Question
    state: int


class Evaluator:
    """Answers the protocol's questions for a model; the model's params are placed once, and every
    text of the run (the edit methods' too) is read through the one `Reader` that holds them.
    `mesh`: a ("data", "model") mesh (`rwkv_jax.mesh.make_mesh`); default every device on data."""

    def __init__(self, model: Model, spec: Spec, *, batch_size: int = DEFAULT_BATCH,
                 devices: Sequence[jax.Device] | None = None, mesh: Mesh | None = None):
        self.model, self.spec = model, spec
        self.layout = Layout(batch_size, devices, mesh=mesh)
        self.reader = Reader(model.params, model.cfg, self.layout)
        self.params = self.reader.params
        table, match = stop_tables(model.tokenizer, (STOP,), model.cfg.vocab_size)
        self.stops = self.layout.replicate((table, match, count_weights(model.tokenizer, model.cfg.vocab_size)))
        self.group_size = max(1, batch_size // GROUP_DIVISOR)

    def encode(self, text: str) -> list[int]:
        return encode(self.model.tokenizer, [text], self.model.cfg.vocab_size)[0]

    def first_token(self, answer: str) -> int:
        """The token an answer starts with after `Assistant:` (answers follow a space)."""
        return self.encode(" " + answer)[0]

    def run(self, cases: Sequence[Case]) -> Iterator[list[tuple[Case, list[dict]]]]:
        """Group by group, each case of the group with its rows (in `protocol.row_keys` order)."""
        for start in range(0, len(cases), self.group_size):
            yield self._group(cases[start:start + self.group_size])

    def _batches(self, n: int) -> Iterator[slice]:
        size = self.layout.batch_size
        return (slice(i, min(i + size, n)) for i in range(0, n, size))

    def read(self, texts: Sequence[str], states: State) -> State:
        """Host states `[K]` after reading one text each from `states` (`[K]`, or one for all)."""
        return self.reader.read_texts(self.model.tokenizer, texts, states, bucket=kernels.TEXT_BUCKET)[1]

    def _edit(self, recipients: State, group: Sequence[Case], branch: Branch) -> State:
        """The branch's method applied to every recipient state `[G]`: the i-th edit of every case
        that has one in one call, in step order."""
        entity = lambda case: case.wrong_entity if branch.variant == WRONG_ENTITY else None
        plans = [[e for step in case_edits(case, entity(case)) for e in step] for case in group]
        states = recipients
        for i in range(max(map(len, plans))):
            rows = [c for c, plan in enumerate(plans) if i < len(plan)]
            edited = branch.method.apply_many(take(states, rows), self.model, [plans[c][i] for c in rows],
                                              reader=self.reader)
            states = put_rows(states, rows, jax.tree.map(np.asarray, edited))
        return states

    def _group(self, group: Sequence[Case]) -> list[tuple[Case, list[dict]]]:
        recipients = self.read([recipient_text(c) for c in group], State.zeros(self.model.cfg))

        # the pool of states, one per (branch, case, setting); filler chains continue from ft=0
        edited, index, chains = [], {}, []
        for branch in self.spec.branches():
            modes = dict.fromkeys(s.mode for s in self.spec.settings(branch) if s.turns)
            for c, case in enumerate(group):
                state = len(group) * len(edited) + c
                index[case.id, branch, Setting(NO_FILLER, 0)] = state
                chains += [(case, branch, mode, state) for mode in modes]
            edited.append(self._edit(recipients, group, branch))
        pool, done = concat(edited), 0
        for k in self.spec.fillers[1:]:
            texts = [filler_text(case, mode, done, k) for case, _, mode, _ in chains]
            read = self.read(texts, take(pool, [i for *_, i in chains]))
            base = len(pool.wkv)
            chains = [(case, branch, mode, base + j) for j, (case, branch, mode, _) in enumerate(chains)]
            index.update({(case.id, branch, Setting(mode, k)): i for case, branch, mode, i in chains})
            pool, done = concat([pool, read]), k

        jobs = [_Job(case, b, s, q, index[case.id, b, s]) for case in group for b in self.spec.branches()
                for s in self.spec.settings(b) for q in questions(case)]
        rows = [self._row(job, *result) for job, result in zip(jobs, self.answer(jobs, pool), strict=True)]
        return [(case, [r for r in rows if r["case_id"] == case.id]) for case in group]

    def answer(self, jobs: Sequence[_Job], pool: State) -> list[tuple[list[int], bool, np.ndarray]]:
        """(generated ids, stopped, first-token probabilities [new, old]) per job: anything with a
        `question` and the index of its `state` in `pool`."""
        prompts = [self.encode(question_prompt(j.question)) for j in jobs]
        targets = np.array([[self.first_token(j.question.new[0]), self.first_token(j.question.old[0])]
                            for j in jobs], np.int32)
        order = np.argsort([len(p) for p in prompts], kind="stable")
        results: list = [None] * len(jobs)
        table, match, weights = self.stops
        for part in self._batches(len(jobs)):
            rows = order[part]
            tokens, lengths = pad([prompts[i] for i in rows], kernels.PROMPT_BUCKET)
            states = take(pool, [jobs[i].state for i in rows])
            # always full: one compiled answer kernel per prompt bucket (it compiles slowly)
            batch = self.layout.pad((tokens, lengths, states, targets[rows]), len(rows), full=True)
            out, count, stopped, probs = self.layout.fetch(kernels.answer(
                self.params, self.model.cfg, *self.layout.put(batch), table, match, weights,
                max_new_tokens=self.spec.max_new_tokens))
            for j, i in enumerate(rows):
                results[i] = (out[j, :count[j]].tolist(), bool(stopped[j]), probs[j])
        return results

    def text(self, ids: list[int]) -> str:
        """A generated answer as text, cut at the stop sequence."""
        return cut_at_stop(self.model.tokenizer.decode(ids), (STOP,))[0]

    def _row(self, job: _Job, ids: list[int], stopped: bool, probs: np.ndarray) -> dict:
        case, q = job.case, job.question
        text = self.text(ids)
        s = score(text, q.expected, q.old, q.new, q.others)
        return {
            "case_id": case.id, "method": job.branch.label, "variant": job.branch.variant,
            "filler_mode": job.setting.mode, "filler_turns": job.setting.turns,
            "kind": q.kind, "index": q.index, "query": q.text, "expected": list(q.expected),
            "generation": text, "stripped": s.stripped, "stopped": stopped, "tokens": len(ids),
            "correct_raw": s.correct_raw, "correct_stripped": s.correct_stripped,
            "old_stripped": s.old_stripped, "new_stripped": s.new_stripped, "others_stripped": s.others_stripped,
            "p_new": float(probs[0]), "p_old": float(probs[1]),
            "answer_tokens": len(self.encode(" " + q.expected[0])), "params": case.params.to_dict(),
        }

