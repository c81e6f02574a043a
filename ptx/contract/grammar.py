"""What an answer must match, torch-free and library-free: a JSON schema, any JSON object, or a regular
expression (OpenAI's ``response_format``, ``ptx generate --json-schema FILE`` and ``--regex``). The chooser
(ptx.contract.sampling.Chooser) masks every token that cannot continue a match at each step, through one
``Constraint`` per row; infer/model/grammar.py makes them with a grammar library for the model's tokenizer."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ptx.errors import InputError

KINDS = ("json_schema", "json_object", "regex", "lark")


class GrammarError(InputError):
    """A schema or pattern that cannot constrain an answer, said in one line."""


@dataclass(frozen=True)
class Grammar:
    """``kind`` "json_schema" (``source``: the schema, as JSON text), "json_object" (any JSON object),
    "regex" (``source``: the pattern, matched whole) or "lark" (``source``: a grammar in llguidance's Lark,
    whose ``%json {schema}`` rules hold JSON parts to a schema: a tool call's syntax around its arguments)."""

    kind: str
    source: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise GrammarError(f"grammar {self.kind!r}: give one of {', '.join(KINDS)}")
        if not isinstance(self.source, str):
            raise GrammarError(f"a {self.kind}'s source is text, not {type(self.source).__name__}")

    @classmethod
    def json_schema(cls, schema) -> "Grammar":
        """An answer that is JSON and validates against ``schema`` (a dict, or its JSON text)."""
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except ValueError as exc:
                raise GrammarError(f"the JSON schema is not JSON ({exc})") from None
        if not isinstance(schema, dict):
            raise GrammarError(f"a JSON schema is an object ({{\"type\": ...}}), not {json.dumps(schema)[:40]}")
        return cls("json_schema", json.dumps(schema))  # its order kept: properties are written in it

    @classmethod
    def json_object(cls) -> "Grammar":
        """An answer that is a JSON object, of any keys and values."""
        return cls("json_object")

    @classmethod
    def regex(cls, pattern: str) -> "Grammar":
        """An answer that ``pattern`` matches whole."""
        if not isinstance(pattern, str) or not pattern:
            raise GrammarError("a regular expression is non-empty text")
        return cls("regex", pattern)

    @classmethod
    def lark(cls, source: str) -> "Grammar":
        """An answer that ``source`` (llguidance's Lark, its first rule ``start``) derives."""
        if not isinstance(source, str) or not source.strip():
            raise GrammarError("a Lark grammar is non-empty text")
        return cls("lark", source)

    @property
    def schema(self) -> dict:
        """The JSON schema an answer validates against (a JSON object's: {"type": "object"})."""
        if self.kind in ("regex", "lark"):
            raise GrammarError(f"a {self.kind} grammar has no JSON schema")
        return json.loads(self.source) if self.kind == "json_schema" else {"type": "object"}

    def describe(self) -> str:
        return {"json_schema": "JSON of its schema", "json_object": "a JSON object",
                "lark": "text of its grammar"}.get(self.kind, f"text matching {self.source}")


class Constraint(Protocol):
    """One row's grammar as the chooser asks it at each step: ``allowed()`` the tokens that may come next (a
    boolean array over the vocabulary), ``advance(token)`` once the row has taken a token, and ``copy()`` one
    that goes on from here on its own (the chooser walks a drafter's guesses on a copy: the row may keep fewer
    of them than the chooser confirms, and its own constraint then takes only those)."""

    def allowed(self) -> np.ndarray: ...

    def advance(self, token: int) -> None: ...

    def copy(self) -> "Constraint": ...


__all__ = ["Constraint", "Grammar", "GrammarError"]
