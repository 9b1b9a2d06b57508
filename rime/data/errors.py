"""Why a RIME case was rejected: one `CaseError` subclass per kind of fault, each naming the case id
and the field path (`recipient.target_position`, `edits[0].style`, ...)."""

from __future__ import annotations


class CaseError(ValueError):
    """A malformed case; `where` (file:line) is filled in by readers that know it."""

    def __init__(self, case_id: str, field: str, reason: str):
        super().__init__(case_id, field, reason)
        self.case_id, self.field, self.reason = case_id, field, reason
        self.where: str | None = None

    def __str__(self) -> str:
        head = f"{self.where}: " if self.where else ""
        return f"{head}case {self.case_id!r}: field {self.field!r}: {self.reason}"


class MissingFieldError(CaseError):
    """A required field is absent."""


class UnknownFieldError(CaseError):
    """A field the format does not define (usually a typo)."""


class FieldTypeError(CaseError):
    """A field holds the wrong JSON type."""


class FieldValueError(CaseError):
    """A field has the right type but a value outside its domain."""


class InconsistentCaseError(CaseError):
    """Fields contradict each other (e.g. params disagree with the recipient)."""


class ExclusionError(CaseError):
    """The params break one of the paper's exclusion rules."""
