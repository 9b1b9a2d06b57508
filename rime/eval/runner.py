"""A resumable evaluation: a model, a list of cases and a `Spec` in, a run folder out.

The run's identity is its config: the model (config and a hash of its params and vocab), the cases
(a hash of their records), the protocol settings and the package version. Running the same command
again continues where the last run stopped; a finished run is left as it is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from importlib import metadata

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from editing import EditMethod, Selection
from rime.data.schema import Case, Record, Session
from rime.data.turns import filler_turns
from rime.eval.evaluate import DEFAULT_BATCH, Evaluator
from rime.eval.protocol import Spec, row_keys, scoped_label
from rime.eval.rows import RunFolder
from rime.eval.sessions import SessionEvaluator
from rwkv_jax.bundle import Model
from rwkv_jax.chat import STOP
from rwkv_jax.mesh import check_mesh, to_host

PACKAGE = "rwkv-jax"


def package_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "unknown"


def model_fingerprint(model: Model) -> dict:
    """The model's config and SHA-256 digests of its params (names, dtypes, values) and vocab."""
    params = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(model.params)[0]:
        array = to_host(leaf)
        params.update(f"{jax.tree_util.keystr(path)}:{array.dtype}:{array.shape}".encode())
        params.update(np.ascontiguousarray(array).tobytes())
    vocab = hashlib.sha256()
    for idx, token in sorted(model.tokenizer.id_to_bytes.items()):
        vocab.update(f"{idx}:{len(token)}:".encode() + token)
    return {"config": dataclasses.asdict(model.cfg), "params_sha256": params.hexdigest(),
            "vocab_sha256": vocab.hexdigest()}


def cases_digest(cases: Sequence[Record]) -> str:
    text = "\n".join(json.dumps(c.to_dict(), sort_keys=True, ensure_ascii=False) for c in cases)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_config(model: Model, model_ref: str, cases: Sequence[Case], source: str, spec: Spec) -> dict:
    return {
        "model": {"ref": model_ref, **model_fingerprint(model)},
        "dataset": {"source": source, "cases": len(cases), "sha256": cases_digest(cases)},
        **spec.config(), "stop": STOP, "package": {PACKAGE: package_version()},
    }


@dataclasses.dataclass(frozen=True)
class Progress:
    """Where a run stands: rows in the folder before this call, rows it still has to add."""

    done: int
    todo: int


def _check_ids_and_methods(model: Model, cases: Sequence[Record], methods: Sequence[EditMethod]) -> None:
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids):
        raise ValueError("case ids repeat; a run needs unique ids to resume")
    for method in methods:
        select = getattr(method, "select", None)
        if isinstance(select, Selection):
            try:
                select.masks(model.cfg.n_layer, model.cfg.n_head)
            except ValueError as err:
                raise ValueError(f"method {method.label}: {err}") from None


def check(model: Model, cases: Sequence[Case], spec: Spec) -> None:
    """Refuses, before anything is written, what would otherwise fail mid-run: repeated case ids,
    a method's layer or head selection that does not fit the model, a case that the filler modes
    cannot serve (a `CaseError` naming the case and field)."""
    _check_ids_and_methods(model, cases, spec.methods)
    if max(spec.fillers) > 0:
        for case in cases:
            for mode in spec.modes:
                filler_turns(case, mode, max(spec.fillers))


def _agreed(finished: set[str], cases: Sequence[Record]) -> set[str]:
    """Process 0's finished cases, on every process: the others need not see its folder, and
    every process must run the same groups (each is one computation over the global mesh)."""
    if jax.process_count() == 1:
        return finished
    mask = multihost_utils.broadcast_one_to_all(np.array([c.id in finished for c in cases]))
    return {c.id for c, done in zip(cases, np.asarray(mask), strict=True) if done}


def _pending(folder: RunFolder, expected: dict[str, int], items: Sequence[Record],
             on_start: Callable[[Progress], None] | None) -> list[Record]:
    """The items (cases or sessions) not yet finished in `folder`, as every process agrees; reports
    the progress so far to `on_start`."""
    finished = _agreed(folder.finished(expected), items)
    todo = [item for item in items if item.id not in finished]
    if on_start:
        on_start(Progress(done=sum(expected[i] for i in finished), todo=sum(expected[item.id] for item in todo)))
    return todo


def run(out: str | os.PathLike, model: Model, model_ref: str, cases: Sequence[Case], source: str, spec: Spec,
        *, batch_size: int = DEFAULT_BATCH, devices: Sequence[jax.Device] | None = None,
        mesh: Mesh | None = None, on_start: Callable[[Progress], None] | None = None,
        on_rows: Callable[[int], None] | None = None) -> RunFolder:
    """Evaluates every case not yet finished in `out` and appends its rows there; returns the
    folder, closed.

    Everything is checked (`check`) before the folder is touched, and the folder is locked while
    the run writes: a second run on it raises `rime.eval.rows.RunLockedError`. `on_start` hears the row
    counts once the folder is read; `on_rows` hears each appended group's row count. `mesh` lays the
    run over a ("data", "model") mesh (`rwkv_jax.mesh.make_mesh`; default every device on data).
    With several processes (`jax.distributed`), every process runs the same call, process 0 writes, and
    only process 0 needs to see `out` (it tells the others which cases are done).
    """
    check(model, cases, spec)
    if mesh is not None:
        check_mesh(model.cfg, mesh)
    writer = jax.process_index() == 0
    with RunFolder(out, run_config(model, model_ref, cases, source, spec), writer=writer) as folder:
        todo = _pending(folder, {c.id: len(row_keys(c, spec)) for c in cases}, cases, on_start)
        if not todo:
            return folder
        for group in Evaluator(model, spec, batch_size=batch_size, devices=devices, mesh=mesh).run(todo):
            rows = [row for _, case_rows in group for row in case_rows]
            if writer:
                folder.append(rows)
            if on_rows:
                on_rows(len(rows))
    return folder


def session_config(model: Model, model_ref: str, sessions: Sequence[Session], source: str, spec: Spec,
                   scoped: bool = False) -> dict:
    """A session run's identity: the model, the sessions and the methods (fillers are the sessions' own)."""
    labels = [m.label for m in spec.methods]
    return {
        "model": {"ref": model_ref, **model_fingerprint(model)},
        "dataset": {"source": source, "sessions": len(sessions), "sha256": cases_digest(sessions)},
        "methods": labels + ([scoped_label(m.label) for m in _scopable(spec)] if scoped else []),
        "max_new_tokens": spec.max_new_tokens, "stop": STOP,
        "package": {PACKAGE: package_version()},
    }


def _scopable(spec: Spec) -> list:
    """The methods a scoped run also evaluates scoped: all but `none`, which edits nothing."""
    return [m for m in spec.methods if m.name != "none"]


def run_sessions(out: str | os.PathLike, model: Model, model_ref: str, sessions: Sequence[Session], source: str,
                 spec: Spec, *, batch_size: int = DEFAULT_BATCH, devices: Sequence[jax.Device] | None = None,
                 mesh: Mesh | None = None, on_start: Callable[[Progress], None] | None = None,
                 on_rows: Callable[[int], None] | None = None, scoped: bool = False) -> RunFolder:
    """`run` for many-edit sessions: every method of `spec` on every session not yet finished in
    `out` (`rime.eval.sessions`), one row per query and method; resumes, locks and refuses a changed
    config like `run`. A group's rows are appended once every method has run on it. `scoped` also
    runs every method but `none` with scoped answering (`SessionEvaluator`)."""
    _check_ids_and_methods(model, sessions, spec.methods)
    if mesh is not None:
        check_mesh(model.cfg, mesh)
    writer = jax.process_index() == 0
    config = session_config(model, model_ref, sessions, source, spec, scoped)
    with RunFolder(out, config, writer=writer) as folder:
        todo = _pending(folder, {s.id: len(s.queries) * len(config["methods"]) for s in sessions}, sessions, on_start)
        if not todo:
            return folder
        evaluator = Evaluator(model, spec, batch_size=batch_size, devices=devices, mesh=mesh)
        runners = [SessionEvaluator(evaluator, method) for method in spec.methods]
        runners += [SessionEvaluator(evaluator, method, scoped=True) for method in _scopable(spec)] if scoped else []
        for start in range(0, len(todo), evaluator.group_size):
            group = todo[start:start + evaluator.group_size]
            rows = [row for runner in runners for row in runner.rows(group)]
            if writer:
                folder.append(rows)
            if on_rows:
                on_rows(len(rows))
    return folder
