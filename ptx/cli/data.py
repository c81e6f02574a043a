"""`ptx data list` and `ptx data fetch`: the datasets ptx downloads and its cache.
"""
from __future__ import annotations

import json

import click

from ptx.cli.options import POSITIVE, Choice
from ptx.errors import PtxError


@click.group("data")
def data_group() -> None:
    """Datasets ptx downloads (MNIST, Fashion-MNIST): what is cached and where, and fetching them.

    \b
    ptx data list                 what each dataset gives, what is in the cache, what `ptx train` reads
    ptx data fetch mnist          download full MNIST (11.6 MB) into the cache, verified
    ptx data fetch fashion-mnist  download Fashion-MNIST (30.9 MB)

    The cache is $PTX_CACHE_DIR/datasets, else $XDG_CACHE_HOME/ptx/datasets, else
    ~/.cache/ptx/datasets. `ptx train` downloads by itself when a dataset is nowhere on the machine;
    PTX_OFFLINE=1 (or `ptx train --offline`) turns that off.
    """


@data_group.command("list")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="PTX_DATA_DIR",
              help="The folder `ptx train --data-dir` would read first. Env: PTX_DATA_DIR.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def data_list_cmd(data_dir, as_json) -> None:
    """Show what every dataset `ptx train --dataset` takes gives (input and label) and which models
    fit it; and each downloadable dataset's state in the cache and where `ptx train` would read it."""
    from ptx.contract.catalog import MODELS
    from ptx.contract.datasets import DATASET_INFO, DataKind, fits
    from ptx.trainers.data import find_local_idx
    from ptx.trainers.download import REMOTES, cache_state, datasets_dir, offline_requested

    offline = offline_requested()
    rows, reads = [], []
    for name, remote in REMOTES.items():
        state = cache_state(remote)
        found, _ = find_local_idx(name, data_dir)
        if found:
            reads.append(f"{found[1]} ({found[0]})")
        elif offline:
            reads.append("mnist-sample (an error with --dataset mnist)" if name == "mnist" else "nothing: downloads are off")
        else:
            reads.append(f"a download from {remote.mirrors[0]}")
        rows.append({"dataset": name, "cache_folder": str(state.folder), "cache": state.describe(),
                     "files_cached": len(state.complete), "files": len(remote.files),
                     "bytes_cached": state.cached_bytes, "bytes": remote.size,
                     "train_reads": {"how": found[1], "folder": str(found[0])} if found else None})
    # What each dataset gives, the same facts `ptx models` shows for what each model takes.
    kinds = [{"dataset": name, "gives": info.gives.to_dict(), "loader": info.loader,
              "models": [m["name"] for m in MODELS if fits(DataKind.from_dict(m["takes"]), info.gives)]}
             for name, info in DATASET_INFO.items()]
    by_name = {row["dataset"]: row for row in rows}
    if as_json:  # one row per dataset; the downloadable ones also say what is in the cache
        click.echo(json.dumps([{**kind, **by_name.get(kind["dataset"], {})} for kind in kinds], indent=2))
        return
    gives = [DataKind.from_dict(kind["gives"]).short() for kind in kinds]
    name_w, gives_w = max(len(k["dataset"]) for k in kinds), max(len(g) for g in gives)
    click.echo(f"{'dataset':<{name_w}}  {'gives':<{gives_w}}  models that train on it")
    for kind, text in zip(kinds, gives):
        models = kind["models"]
        shown = ", ".join(models) if len(models) <= 4 else f"{len(models)} models: {', '.join(models[:3])}, ..."
        click.echo(f"{kind['dataset']:<{name_w}}  {text:<{gives_w}}  {shown}")
    click.echo(f"\ncache: {datasets_dir()}" + ("  (downloads off: PTX_OFFLINE=1)" if offline else ""))
    width = max(len(r["cache"]) for r in rows)
    click.echo(f"{'dataset':<14} {'in the cache':<{width}}  ptx train reads")
    for r, where in zip(rows, reads):
        click.echo(f"{r['dataset']:<14} {r['cache']:<{width}}  {where}")


@data_group.command("fetch")
# The names of trainers.download.REMOTES, written out: importing it here would load urllib for every command.
@click.argument("names", nargs=-1, required=True, type=Choice(["mnist", "fashion-mnist"]))
@click.option("--mirror", "mirrors", multiple=True, metavar="URL",
              help="A mirror to try before the built-in ones (a folder URL holding the .gz files); repeatable.")
@click.option("--timeout", type=POSITIVE, default=15.0, show_default=True,
              help="Seconds a connection or a read may stall before the next mirror is tried.")
def data_fetch_cmd(names, mirrors, timeout) -> None:
    """Download NAMES into the cache: SHA-256 checked, resumable, mirrors tried in order."""
    from ptx.trainers.download import OFFLINE_ENV, REMOTES, fetch, offline_requested

    if offline_requested():
        raise PtxError(f"downloads are off ({OFFLINE_ENV}=1): unset it to fetch {', '.join(names)}")
    for name in dict.fromkeys(names):
        folder = fetch(name, mirrors=mirrors, timeout=timeout, log=lambda line: click.echo(line, err=True))
        click.echo(f"{name}: {len(REMOTES[name].files)} files verified in {folder}")
