"""One registry type for models, export formats and backends (timm's register_model, with
torchvision's refusal of duplicate names): each kind of plug-in is one file that calls register()."""
from __future__ import annotations

from typing import Generic, TypeVar

from ptx.errors import PtxError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> entry. ``kind`` names the entries in messages; ``error`` is raised for unknown names."""

    def __init__(self, kind: str, error: type[PtxError] = PtxError, hint: str = ""):
        self.kind, self.error, self.hint = kind, error, hint
        self.entries: dict[str, T] = {}

    def register(self, entry: T) -> T:
        name = entry.name
        if name in self.entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self.entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        try:
            return self.entries[name]
        except (KeyError, TypeError):
            raise self.error(unknown_name(self.kind, name, list(self.entries)) + self.hint) from None

    def names(self) -> list[str]:
        return list(self.entries)


def unknown_name(kind: str, name: object, known: list[str]) -> str:
    """'unknown model 'convnett'; did you mean convnet?' (the way click answers a mistyped command),
    else the whole list to choose from."""
    import difflib  # only for a mistyped name: not on every command's start

    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6) if isinstance(name, str) else []
    if close:
        return f"unknown {kind} {name!r}; did you mean {' or '.join(close)}?"
    return f"unknown {kind} {name!r}; choose one of {', '.join(known)}"
