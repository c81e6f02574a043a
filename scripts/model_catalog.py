"""Write ptx/contract/catalog.py: the registered models as plain data, so that what must not
import torch (`ptx models`, a mistyped name's "did you mean" in predict/verify/bench/serve and
`ptx.infer.load()`) knows them. tests/test_catalog.py fails when the file drifts from the registry
and names this script.

    python3 scripts/model_catalog.py          # rewrite ptx/contract/catalog.py from the registry
    python3 scripts/model_catalog.py --check  # exit 1 when it differs
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CATALOG = REPO / "ptx" / "contract" / "catalog.py"
TRITON, KSERVE = "triton", "kserve"  # deployment folders built on the ONNX export (ptx/cli/export.py's names)

HEADER = '''"""The registered models as plain data: `ptx models` lists them, and a mistyped model name gets
"did you mean" from predict, verify, bench, serve and ``ptx.infer.load()`` without importing torch
(ptx.models does, to define the modules).

Generated from the registry by scripts/model_catalog.py; do not edit by hand. tests/test_catalog.py
checks it against ptx.models (names, shapes, parameter counts of the built modules, formats, the
data each model takes).
"""
from __future__ import annotations

'''

FOOTER = '''

def names() -> list[str]:
    """The registered model names, in registry order."""
    return [m["name"] for m in MODELS]


def unknown_model(name: str) -> str | None:
    """The registry's answer to a name no registered model has ("unknown model 'convnett'; did you
    mean convnet? (see `ptx models`)"), else None."""
    from .registry import unknown_name

    return None if name in names() else unknown_name("model", name, names()) + " (see `ptx models`)"


def known_to_fit(name: str, dataset: object) -> bool:
    """Whether ``name`` trains on the named ``dataset`` (FITS): opening an artifact asks this first and
    loads the dataset table (datasets.recorded_mismatch) only to explain any other pair."""
    return dataset in FITS.get(name, ())


def takes(name: str):
    """The data model ``name`` takes (a datasets.DataKind), or None for a model the catalog does not
    know (a user's own registered one)."""
    from .datasets import DataKind

    row = next((m for m in MODELS if m["name"] == name), None)
    return DataKind.from_dict(row["takes"]) if row else None
'''


def rows() -> list[dict]:
    """One dict per registered model, as `ptx models --json` prints it."""
    from ptx.export.formats import supported_formats
    from ptx.models import get, list_models

    out = []
    for name in list_models():
        spec = get(name)
        supported = supported_formats(spec)
        # Triton and the kserve image serve the ONNX export.
        formats = supported + ([TRITON, KSERVE] if "onnx" in supported else [])
        out.append({"name": name, "input_shape": list(spec.input.shape), "batch_axis": spec.input.batch_axis,
                    "params": spec.params, "dataset": spec.dataset, "takes": spec.takes.to_dict(), "tutorial": spec.seed, "formats": formats,
                    "description": spec.description})
    return out


def fits() -> dict[str, list[str]]:
    """Model -> the named datasets it can train on (a user's folder:PATH is judged when it is read)."""
    from ptx.contract.datasets import FOLDER, datasets_for
    from ptx.models import get, list_models

    return {name: [d for d in datasets_for(get(name).takes) if d != FOLDER] for name in list_models()}


def _commonest(values: list) -> object:
    """The value most of ``values`` share (the first such, where several tie)."""
    return max(values, key=values.count)


def _packed(doc: dict, indent: int, width: int = 120) -> str:
    """``doc`` as a dict literal, as many ``key: value`` items a line as fit in ``width``."""
    lines, line = [], "{"
    for item in (f"{key!r}: {value!r}" for key, value in doc.items()):
        if len(line) + len(item) + 4 > width - indent and line != "{":  # room for ", " and the closing "},"
            lines.append(line + ",")
            line = " " + item
        else:
            line += ("" if line == "{" else ", ") + item
    return ("\n" + " " * indent).join(lines + [line + "}"])


def source() -> str:
    """The catalog's text: the values many models share once (COMMON, FITS_COMMON), and for each model
    only what differs from them, so that a model's row reads as what sets it apart."""
    models, fitting = rows(), fits()
    fields = list(models[0])
    common = {}
    for key in fields:
        value = _commonest([m[key] for m in models])
        if 3 * [m[key] for m in models].count(value) > len(models):
            common[key] = value
    table = "".join(f"    {_packed({k: v for k, v in m.items() if common.get(k, ...) != v}, 4)},\n" for m in models)
    fits_common = _commonest(list(fitting.values()))
    fits_differ = {name: value for name, value in fitting.items() if value != fits_common}
    return (HEADER + f"FIELDS = {fields!r}\n"
            + "# What many models share: a row of MODELS below says only what differs from it.\n"
            + f"COMMON = {_packed(common, 9)}\n"
            + "MODELS = [{key: {**COMMON, **row}[key] for key in FIELDS} for row in [\n" + table + "]]\n\n"
            + "# The named datasets each model trains on (a user's folder:PATH is judged when it is read).\n"
            + f"FITS_COMMON = {fits_common!r}\n"
            + "FITS = {**{m['name']: FITS_COMMON for m in MODELS},\n"
            + f"        **{_packed(fits_differ, 10)}}}\n" + FOOTER)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 when ptx/contract/catalog.py differs")
    args = parser.parse_args()
    text = source()
    if args.check:
        same = CATALOG.is_file() and CATALOG.read_text() == text
        print(f"{CATALOG}: {'up to date' if same else 'differs from the registry'}")
        return 0 if same else 1
    from ptx.atomic import write_text

    write_text(CATALOG, text)
    print(f"wrote {CATALOG} ({len(rows())} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
