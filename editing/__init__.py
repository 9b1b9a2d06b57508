"""Editing the RWKV-7 recurrent state: algebra, calibration deltas, transplants, edit methods.

Everything here is a pure function of `rwkv_jax.State` pytrees; the README's "Editing the state"
section shows the main calls; `apply_sequence` edits a state K times, keeping every edit revertible.
"""

from editing import scoped, writes
from editing.addressed import AddressedEdit, EraseEdit
from editing.algebra import (
    Delta,
    Edit,
    apply,
    apply_edit,
    delta,
    interpolate,
    revert,
    scale,
    transplant,
    undo,
)
from editing.calibration import calibrate, calibrate_batch, edit, wrap
from editing.checks import NonFiniteDeltaError, StateMismatchError
from editing.keys import other_people, other_properties, question, read_keys, read_keys_with
from editing.locate import EntityNotInTranscriptError, LocateEdit
from editing.measure import Breakdown, cosine, norms
from editing.methods import (
    READS,
    CaseEdit,
    EditMethod,
    ModelLike,
    get_method,
    method_names,
    register,
)
from editing.optimized import OptimizedEdit
from editing.select import ALL, SPANS, Selection
from editing.sequence import apply_recorded, apply_sequence
from editing.sparse import SparseEdit, overlap, sparsify, support

__all__ = [
    "ALL",
    "AddressedEdit",
    "EraseEdit",
    "SPANS",
    "Breakdown",
    "READS",
    "CaseEdit",
    "Delta",
    "Edit",
    "EditMethod",
    "EntityNotInTranscriptError",
    "LocateEdit",
    "ModelLike",
    "NonFiniteDeltaError",
    "OptimizedEdit",
    "Selection",
    "SparseEdit",
    "StateMismatchError",
    "apply",
    "apply_edit",
    "apply_recorded",
    "apply_sequence",
    "calibrate",
    "calibrate_batch",
    "cosine",
    "delta",
    "edit",
    "get_method",
    "interpolate",
    "method_names",
    "norms",
    "other_people",
    "other_properties",
    "overlap",
    "question",
    "read_keys",
    "read_keys_with",
    "register",
    "revert",
    "scale",
    "scoped",
    "sparsify",
    "support",
    "transplant",
    "undo",
    "wrap",
    "writes",
]
