"""A plan: what Postroom will do to one message. Produced by :func:`decide`, executed by the
executor, recorded in the ledger (ids and decisions only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from postroom.processing.rules import RuleGroup

DecidedBy = Literal["rule", "model", "needs_review", "none"]


@dataclass(frozen=True)
class CategoryConfig:
    """One category of an integration, as configured in the wizard or the editor."""

    name: str
    color: str = "preset0"
    folder: str | None = None  # "Parent/Child" path, or None to leave the message where it is
    forward_to: tuple[str, ...] = ()
    forward_comment: str = ""
    rules: RuleGroup | None = None  # None: only the classifier can pick this category
    description: str = ""


@dataclass(frozen=True)
class Forward:
    to: tuple[str, ...]
    comment: str = ""


@dataclass(frozen=True)
class Plan:
    category: str | None
    add_categories: tuple[str, ...] = ()  # merged with the message's own, never replacing them
    folder: str | None = None
    forward: Forward | None = None
    decided_by: DecidedBy = "none"
    confidence: float | None = None
    reasons: tuple[str, ...] = field(default=(), compare=False)
    # Why, for people (the activity view): ("rule", field, operator, value) for each condition
    # that matched, ("next", category, probability) for the categories the model weighed next.
    # Configuration and numbers only, never mail content.
    why: tuple[tuple[str, ...], ...] = field(default=(), compare=False)

    @property
    def empty(self) -> bool:
        return not self.add_categories and self.folder is None and self.forward is None

    def to_json(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "add_categories": list(self.add_categories),
            "folder": self.folder,
            "forward": {"to": list(self.forward.to), "comment": self.forward.comment}
            if self.forward
            else None,
            "decided_by": self.decided_by,
            "confidence": self.confidence,
            "reasons": list(self.reasons),
            **({"why": [list(w) for w in self.why]} if self.why else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        forward = data.get("forward")
        return cls(
            category=data.get("category"),
            add_categories=tuple(data.get("add_categories") or ()),
            folder=data.get("folder"),
            forward=Forward(tuple(forward["to"]), forward.get("comment", "")) if forward else None,
            decided_by=data.get("decided_by", "none"),
            confidence=data.get("confidence"),
            reasons=tuple(str(r) for r in data.get("reasons") or ()),
            why=tuple(
                tuple(str(part) for part in w)
                for w in data.get("why") or ()
                if isinstance(w, list | tuple)
            ),
        )
