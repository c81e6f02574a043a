"""``--module FILE.py:FACTORY`` and ``--checkpoint``: a user's module built by their own code, and
their weights loaded into it strictly. Every failure is one PtxError naming the file and, where
there is one, the line."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from ptx.errors import PtxError, first_line

from .refusal import raised, sentence
from .user_code import import_callable


@dataclass
class Factory:
    """What ``--module FILE.py:FACTORY`` gave: the module, its example inputs (or None) and where
    it came from."""

    module: torch.nn.Module
    example_inputs: object
    source: Path
    factory: str

    @property
    def provenance(self) -> dict[str, str]:
        return {"source": f"{self.source.name}:{self.factory}",
                "source_sha256": hashlib.sha256(self.source.read_bytes()).hexdigest()}


def load_factory(spec: str) -> Factory:
    """Import FILE.py (it runs, as ``python FILE.py`` would run it, with its folder on sys.path)
    and call FACTORY(), which returns an nn.Module or (module, example inputs). Every failure is
    one PtxError naming the file and, where there is one, the line."""
    target, path, factory = import_callable(spec, "--module", "FILE.py:FACTORY, FACTORY the function (or class) in "
                                            "FILE.py that returns your nn.Module, e.g. --module net.py:build")
    try:
        made = target()
    except Exception as exc:  # noqa: BLE001
        raise PtxError(f"--module {spec}: {factory}() {raised(exc, path)}") from None
    example = None
    if isinstance(made, (tuple, list)) and len(made) == 2 and isinstance(made[0], torch.nn.Module):
        made, example = made
    if not isinstance(made, torch.nn.Module):
        raise PtxError(f"--module {spec}: {factory}() returned {type(made).__name__}; return an nn.Module, or "
                       "(module, example inputs)")
    return Factory(made, example, path, factory)


STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")  # where common checkpoints nest theirs


def load_state_dict_file(module: torch.nn.Module, path: str | Path, name: str) -> str:
    """Load the state_dict saved at ``path`` into ``module``, strictly; one PtxError naming the first
    missing or unexpected key (or the first size mismatch) otherwise. Returns what was loaded."""
    path = Path(path)
    if not path.is_file():
        raise PtxError(f"--checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle and zip errors of many types
        raise PtxError(f"--checkpoint {path}: not a state_dict torch loads safely ({sentence(first_line(exc))}); "
                       "save one with torch.save(model.state_dict(), PATH)") from None
    nested = ""
    if isinstance(state, Mapping) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        key = next((k for k in STATE_DICT_KEYS if isinstance(state.get(k), Mapping)), None)
        if key is None:
            raise PtxError(f"--checkpoint {path}: holds a dict whose values are not all tensors and no "
                           f"{'/'.join(STATE_DICT_KEYS)} entry: save torch.save(model.state_dict(), PATH)")
        state, nested = state[key], f"[{key!r}]"
    if not isinstance(state, Mapping):
        raise PtxError(f"--checkpoint {path}: holds a {type(state).__name__}, not a state_dict")
    expected = set(module.state_dict())
    # A Lightning checkpoint names its weights model.l.weight, a DistributedDataParallel one
    # module.l.weight, a torch.compile'd one _orig_mod.l.weight: a prefix on every key, and without
    # it exactly the module's keys, is taken off (and said) rather than refused as not fitting.
    bare, stripped = state, ""
    while bare and set(bare) != expected:
        prefix = next(iter(bare)).split(".", 1)[0] + "."
        if not all(k.startswith(prefix) for k in bare):
            break
        bare, stripped = {k[len(prefix):]: v for k, v in bare.items()}, stripped + prefix
    if stripped and set(bare) == expected:
        state = bare
    else:
        stripped = ""  # no fit either way: the keys are named as saved
    missing = [k for k in module.state_dict() if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = [f"{kind} key {keys[0]!r}" + (f" (and {len(keys) - 1} more)" if len(keys) > 1 else "")
                 for kind, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise PtxError(f"--checkpoint {path}{nested} does not fit {name}: {'; '.join(parts)}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        mismatch = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), first_line(exc))
        raise PtxError(f"--checkpoint {path}{nested} does not fit {name}: {mismatch}") from None
    return f"{path}{nested} ({len(state)} tensors, loaded strictly" + \
        (f", without the prefix {stripped!r} on every key)" if stripped else ")")
