"""`ptx runs`: the runs under a folder, from their side files.
"""
from __future__ import annotations

import json

import click

from ptx.contract import DEFAULT_RUNS_ROOT


@click.command("runs")
@click.option("--root", type=click.Path(file_okay=False), default=DEFAULT_RUNS_ROOT, show_default=True,
              help="Where runs live: every folder under it that ptx trained into, whatever its name.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def runs_cmd(root, as_json) -> None:
    """List the runs under --root: model, dataset, epochs, test accuracy or MSE, date, exports, the
    verify verdict and fastest verified backend recorded on this machine, and what is wrong (stale
    exports, a model that learned nothing, a broken run). Reads side files only: no checkpoint is loaded."""
    from ptx.infer.inspect.runs import list_runs, table

    rows = list_runs(root)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo(f"no runs under {root}: `ptx train NAME` makes one (`ptx models` lists the names)")
        return
    click.echo(table(rows))
