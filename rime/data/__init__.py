"""The RIME dataset: cases generated from templates, their checks and storage, and the training
corpus's turns. Nothing here imports JAX; `rime.chat` renders turns in the model's chat template
and `rime.eval` runs edit methods on the cases.

    cases = rime.load("test")                      # bundled split (or a JSONL file / save_to_disk folder)
    case = cases[0]
    rime.recipient_messages(case)                  # the recipient as chat turns
    case.edit_steps()                              # the calibration pairs, in application order
    rime.filler_turns(case, "adversarial", 2)      # filler exchanges for the multi-turn axis
    splits = rime.build_splits(seed=0)             # regenerate; rime.summary(splits) reports marginals
    sessions = rime.load("session_test")           # many-edit sessions; rime.expected_answers(sessions[0])
    next(rime.dialogue_turns(seed=0))              # training corpus for the bundled model, as turns
"""

from rime.data.axes import (
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
from rime.data.cases import make_case
from rime.data.content import content
from rime.data.corpus import MIXES, Mix, dialogue_turns, held_out_texts, sample_dialogue, vocabulary
from rime.data.errors import (
    CaseError,
    ExclusionError,
    FieldTypeError,
    FieldValueError,
    InconsistentCaseError,
    MissingFieldError,
    UnknownFieldError,
)
from rime.data.hub import features, session_features, to_dataset_dict, write_hub
from rime.data.ledger import answer_key, expected_answers
from rime.data.schema import (
    CalibrationPair,
    Case,
    Controls,
    Fact,
    JointEdit,
    Probe,
    Recipient,
    Session,
    SessionEdit,
    SessionQuery,
    StackStep,
    read_record,
)
from rime.data.sessions import build_session_splits, make_session
from rime.data.splits import (
    DEFAULT_SEED,
    DEV_SIZE,
    TEST_SIZE,
    build_split,
    build_splits,
    marginals,
    summary,
)
from rime.data.storage import (
    BUNDLED_SPLITS,
    GENERATED_SPLITS,
    HAND_WRITTEN_SPLITS,
    FormatError,
    check_jsonl,
    load,
    read_jsonl,
    write_build,
    write_jsonl,
)
from rime.data.turns import (
    FILLER_MODES,
    MAX_FILLER_TURNS,
    acknowledgement,
    filler_turns,
    recipient_messages,
)

__all__ = [
    "AXES", "BUNDLED_SPLITS", "DEFAULT_SEED", "DEV_SIZE", "EXCLUSIONS", "FILLER_MODES", "GENERATED_SPLITS",
    "HAND_WRITTEN_SPLITS", "MAX_FILLER_TURNS", "MIXES", "PROBE_KINDS", "TEST_SIZE", "CalibrationPair", "Case",
    "CaseError", "Cell", "Controls", "ExclusionError", "Fact", "FieldTypeError", "FieldValueError", "FormatError",
    "InconsistentCaseError", "JointEdit", "MissingFieldError", "Mix", "Probe", "Recipient", "Session", "SessionEdit",
    "SessionQuery", "StackStep", "UnknownFieldError", "acknowledgement", "admissible_cells", "answer_key",
    "build_session_splits", "build_split", "build_splits", "check_jsonl", "content", "dialogue_turns", "difficulty",
    "expected_answers", "features", "filler_turns", "grid_size", "held_out_texts", "load", "make_case",
    "make_session", "marginals", "read_jsonl", "read_record", "recipient_messages", "sample_dialogue",
    "session_features", "stratum", "summary", "to_dataset_dict", "violations", "vocabulary", "write_build",
    "write_hub", "write_jsonl",
]
