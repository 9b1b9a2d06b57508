"""RIME: the Runtime Internal Memory Editing benchmark, generated from templates.

    cases = rime.load("test")                      # bundled split (or a JSONL file / save_to_disk folder)
    case = cases[0]
    rime.recipient_messages(case)                  # the recipient as chat turns
    case.edit_steps()                              # the calibration pairs, in application order
    rime.filler_turns(case, "adversarial", 2)      # filler exchanges for the multi-turn axis
    splits = rime.build_splits(seed=0)             # regenerate; rime.summary(splits) reports marginals
    next(rime.dialogues(seed=0))                   # training corpus for the bundled model

Evaluating edit methods (paper §5.4-§5.6; these names load JAX on first use):

    spec = rime.Spec.build(["delta", "null", "in_context"], fillers=(0, 1))
    rime.run("runs/x", rwkv_jax.load("rime-tiny"), "rime-tiny", cases, "test", spec)  # resumable
    rime.write_report("runs/x")                    # report.md and the four figures
"""

import importlib

from rime.axes import (
    AXES,
    EXCLUSIONS,
    PROBE_KINDS,
    Cell,
    admissible_cells,
    difficulty,
    grid_size,
    stratum,
    violations,
)
from rime.content import content
from rime.corpus import dialogue_turns, dialogues, held_out_texts, sample_dialogue, vocabulary
from rime.errors import (
    CaseError,
    ExclusionError,
    FieldTypeError,
    FieldValueError,
    InconsistentCaseError,
    MissingFieldError,
    UnknownFieldError,
)
from rime.generate import make_case
from rime.sampling import (
    DEFAULT_SEED,
    DEV_SIZE,
    TEST_SIZE,
    build_split,
    build_splits,
    marginals,
    summary,
)
from rime.schema import Case, Edit, JointEdit, Params, Probe, Recipient, StackStep
from rime.storage import (
    BUNDLED_SPLITS,
    FormatError,
    check_jsonl,
    features,
    load,
    read_jsonl,
    to_dataset_dict,
    write_build,
    write_jsonl,
)
from rime.turns import (
    FILLER_MODES,
    MAX_FILLER_TURNS,
    acknowledgement,
    chat_text,
    filler_turns,
    recipient_messages,
)

# name -> module; imported on first access so that `import rime` does not load JAX
_EVALUATION = {
    "ConfigMismatchError": "rime.rows", "Evaluator": "rime.evaluate", "Spec": "rime.protocol",
    "read_rows": "rime.rows", "run": "rime.runner", "score": "rime.scoring", "wilson": "rime.scoring",
    "write_report": "rime.report",
}


def __getattr__(name: str):
    if name in _EVALUATION:
        return getattr(importlib.import_module(_EVALUATION[name]), name)
    raise AttributeError(f"module 'rime' has no attribute {name!r}")


__all__ = [*_EVALUATION, 
    "AXES", "BUNDLED_SPLITS", "DEFAULT_SEED", "DEV_SIZE", "EXCLUSIONS", "FILLER_MODES", "MAX_FILLER_TURNS",
    "PROBE_KINDS", "TEST_SIZE", "Case", "CaseError", "Cell", "Edit", "ExclusionError", "FieldTypeError",
    "FieldValueError", "FormatError", "InconsistentCaseError", "JointEdit", "MissingFieldError", "Params",
    "Probe", "Recipient", "StackStep", "UnknownFieldError", "acknowledgement", "admissible_cells",
    "build_split", "build_splits", "chat_text", "check_jsonl", "content", "dialogue_turns", "dialogues", "difficulty",
    "features", "filler_turns", "grid_size", "held_out_texts", "load", "make_case", "marginals",
    "read_jsonl", "recipient_messages", "sample_dialogue", "stratum", "summary",
    "to_dataset_dict", "violations", "vocabulary", "write_build", "write_jsonl",
]
