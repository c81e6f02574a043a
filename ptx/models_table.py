"""What `ptx models` prints: the catalog as a table that fits the terminal (ptx.terminal), with a legend
for the two columns a newcomer cannot guess (where each model comes from, and its export formats)."""
from __future__ import annotations

from ptx.contract.datasets import DataKind
from ptx.terminal import table, terminal_width


def formats_cell(formats: list[str], every: list[str]) -> str:
    """Most models export to every format: say "all", and name only what a model lacks."""
    missing = [f for f in every if f not in formats]
    if len(missing) > 1 and all(f.endswith("-int8") for f in missing):
        missing = ["int8"]  # one cell, not a wrapped row: a model without int8 lacks every int8 format
    return "all" if not missing else f"all but {', '.join(missing)}"


def models_table(rows: list[dict], width: int | None = None) -> str:
    """The catalog's ``rows`` (ptx.contract.catalog.MODELS) as `ptx models` prints them: what each model
    takes and where it comes from, then (a second table, so that neither wraps into tall rows) its
    input tensor, size and what it is."""
    from ptx.tutorials import legend

    width = width or terminal_width()
    every = max((r["formats"] for r in rows), key=len)  # in the registry's order, as the catalog lists them
    facts = table(["model", "takes", "default data", "from tutorial", "exports"],
                  [[r["name"], DataKind.from_dict(r["takes"]).short(), r["dataset"], r["tutorial"],
                    formats_cell(r["formats"], every)] for r in rows],
                  no_wrap=["model", "default data"], width=width)
    what = table(["model", "input tensor", "params", "what it is"],
                 [[r["name"], "(" + ", ".join(str(d) for d in r["input_shape"]) + ")", f"{r['params']:,}",
                   r["description"]] for r in rows],
                 right=["params"], no_wrap=["model", "input tensor", "params"], width=width)
    return (f"{facts}\n\nexports: all = {', '.join(every)}\n"
            "from tutorial: the document each model and its recipe come from, and where in it\n"
            f"{legend(min(width, 100))}\n\n{what}")
