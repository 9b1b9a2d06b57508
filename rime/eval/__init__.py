"""Evaluating edit methods on RIME (paper §5.4-§5.6), in JAX: `protocol` plans the rows of a case,
`evaluate` and `kernels` compute them in batches, `runner` writes them to a resumable run folder
(`rows`), `scoring` and `analysis` turn them into rates, `report` and `figures` into report.md and PNGs;
`sessions` runs many-edit sessions (`run_sessions`, `write_session_report`).

    spec = rime.eval.Spec.build(["delta", "null", "in_context"], fillers=(0, 1))
    rime.eval.run("runs/x", rwkv_jax.load("rime-tiny"), "rime-tiny", cases, "test", spec)  # resumable
    rime.eval.write_report("runs/x")               # report.md and the four figures
"""

from rime.eval.analysis import Analysis, Rate
from rime.eval.evaluate import Evaluator
from rime.eval.protocol import Spec
from rime.eval.report import headline_summary, write_report
from rime.eval.rows import ConfigMismatchError, read_rows
from rime.eval.runner import run, run_sessions
from rime.eval.scoring import score, wilson
from rime.eval.sessions import SessionEvaluator, write_session_report

__all__ = [
    "Analysis", "ConfigMismatchError", "Evaluator", "Rate", "SessionEvaluator", "Spec", "headline_summary",
    "read_rows", "run", "run_sessions", "score", "wilson", "write_report", "write_session_report",
]
