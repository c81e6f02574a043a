"""`ptx models`: the registered models, from the catalog (no torch).
"""
from __future__ import annotations

import json

import click


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def models_cmd(as_json: bool) -> None:
    """List the registered models: the data each takes (and so the datasets it trains on), its
    default dataset and the export formats it supports."""
    from ptx.contract.catalog import MODELS  # data, not the registry: listing names needs no torch

    from ptx.contract.datasets import DataKind, datasets_for

    # the datasets `ptx train NAME --dataset` takes: those that give what the model takes (new rows: the
    # catalog's own are not changed)
    rows = [{**r, "trains_on": datasets_for(DataKind.from_dict(r["takes"]))} for r in MODELS]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from ptx.models_table import models_table

    click.echo(models_table(rows))
