"""Scoring with Ray Data, on one machine or a cluster (the ``ray`` extra: pip install 'ptx[ray]').

``Scorer`` is a class for ``ray.data.Dataset.map_batches``: each actor opens the ptx artifact once
and answers batches of picture bytes (``read_binary_files``) or arrays (``read_images``) with ptx's
own picture pipeline and backend, one row per picture with the fields of `ptx predict --json`::

    import ray
    from ptx.infer.predict.ray_data import Scorer, actor_options

    ds = ray.data.read_binary_files("s3://bucket/scans/", include_paths=True)
    answers = ds.map_batches(Scorer, fn_constructor_kwargs={"artifact": "runs/convnet/model.onnx"},
                             batch_size=256, **actor_options())  # compute=ActorPoolStrategy, num_cpus
    answers.write_parquet("s3://bucket/answers/")

`ptx predict --ray [ADDRESS] INPUTS --output DIR` does the same from the command line. Ray schedules
everything; ptx only sizes the actor pool from what Ray says it has (docs/batch-scoring.md).
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from ptx.contract import Task
from ptx.errors import PtxError

from ..formats import onnx_files
from ..model.target import load
from ..model.inputs import IMAGE_SUFFIXES, expand_inputs
from .outputs import answer_schema, columns_for
from .stream import Input, default_workers, stream_answers

READ_CPUS = 0.25  # a read or write task mostly waits on storage: it must not take a whole CPU from the actors
GPU_BACKENDS = ("ort-cuda",)
REMOTE = re.compile(r"^[a-z][a-z0-9+.-]*://")  # s3://, gs://, ... (not a local path)


def _need_ray():
    from ptx.extras import require

    require("ray")
    import ray

    return ray


class Scorer:
    """A Ray Data batch function that holds one ptx Predictor (one per actor).

    ``artifact``: an artifact file's path (every node must see it), or its bytes with ``file_name``
    (e.g. "model.onnx": the name says the format), which Ray ships to each actor. ``column``: the
    batch's pictures, "bytes" (read_binary_files) or "image" (read_images); "path", when the batch
    has it, names each answer's input. Returns a pyarrow Table of rows with --json's fields."""

    def __init__(self, artifact: str | bytes, file_name: str | None = None, backend: str | None = None,
                 device: str | None = None, precision: str | None = None, raw: bool = False,
                 column: str | None = None, min_confidence: float | None = None, topk: int = 0):
        if isinstance(artifact, bytes):
            self._folder = tempfile.TemporaryDirectory(prefix="ptx-ray-")
            path = Path(self._folder.name) / (file_name or "model.onnx")
            path.write_bytes(artifact)
            artifact = str(path)
        self.predictor = load(artifact, backend=backend, device=device, precision=precision)
        contract = self.predictor.contract
        self.columns = columns_for(contract.task is Task.REGRESSION, topk)
        self.schema = answer_schema(self.columns, contract.per_position)
        self.raw, self.column, self.min_confidence, self.topk = raw, column, min_confidence, topk

    def __call__(self, batch: dict):
        import pyarrow as pa

        column = self.column or ("bytes" if "bytes" in batch else "image")
        paths = batch.get("path")
        inputs = [Input(bytes(v) if isinstance(v, (bytes, bytearray, memoryview)) else v,
                        str(paths[i]) if paths is not None else f"{column}[{i}]",
                        name=str(paths[i]) if paths is not None else None)
                  for i, v in enumerate(batch[column])]
        answers = stream_answers(self.predictor, inputs, raw=self.raw, workers=0, chunk=max(1, len(inputs)),
                                 min_confidence=self.min_confidence)
        rows = [a.to_dict(self.topk) for a in answers]
        return pa.Table.from_pylist([{c: r.get(c) for c in self.columns} for r in rows], schema=self.schema)


def actor_options(backend: str | None = None, device: str | None = None) -> dict:
    """map_batches' concurrency and per-actor resources, from what the Ray cluster has now: one
    actor per GPU for a CUDA backend; else one per CPU, each asking a fraction of a CPU so that
    the read and write tasks (READ_CPUS each) always find room (on 2 CPUs, two whole-CPU actors left
    the read task waiting forever)."""
    ray = _need_ray()
    have = ray.available_resources()
    if backend in GPU_BACKENDS or (device or "").startswith("cuda"):
        gpus = int(have.get("GPU", 0))
        if not gpus:
            raise PtxError(f"backend {backend} on {device or 'cuda'} needs GPUs and this Ray cluster has none")
        return {"compute": ray.data.ActorPoolStrategy(size=gpus), "num_gpus": 1, "num_cpus": 1}
    cpus = max(1.0, have.get("CPU", 1.0))
    actors = max(1, int(cpus))
    return {"compute": ray.data.ActorPoolStrategy(size=actors),
            "num_cpus": round((cpus - 2 * READ_CPUS) / actors, 3)}  # room for a read and a write task


def split_address(value: str, inputs: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """`--ray` takes an optional ADDRESS: a value that is not one (auto, local, ray://..., HOST:PORT)
    is the first input, and Ray is local."""
    if value in ("local", "auto") or value.startswith("ray://") or re.fullmatch(r"[\w.-]+:\d+", value):
        return value, inputs
    return "local", (value, *inputs)


def _sources(inputs: list[str]) -> list[str]:
    """Local arguments expand as `ptx predict` expands them (folders, globs: the same files); remote
    ones (s3://, gs://) go to Ray as they are."""
    out = []
    for arg in inputs:
        if REMOTE.match(arg):
            out.append(arg)
            continue
        expanded = expand_inputs([arg])
        if expanded.errors:
            raise PtxError(expanded.errors[0][1])
        out += [os.path.abspath(p) for p in expanded.items]  # symlinks kept: the input as named
    return out


def predict_with_ray(inputs: list[str], output: str, *, address: str = "local", target="convnet",
                     backend: str | None = None, device: str | None = None, precision: str | None = None,
                     raw: bool = False, min_confidence: float | None = None, topk: int = 0,
                     batch_size: int = 256) -> int:
    """Score ``inputs`` (local paths, folders, globs; s3:// gs:// folders) through ``target`` (a Target,
    or what load() takes) with Ray Data and write Parquet files under ``output`` (a folder, local or
    remote). Returns the number of rows."""
    ray = _need_ray()
    path = load(target, backend=backend, device=device, precision=precision).path  # a bad choice fails here, once
    started = not ray.is_initialized()
    if started:
        if address == "local":
            ray.init(num_cpus=default_workers(), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().execution_options.preserve_order = True  # rows in input order
        ray.data.DataContext.get_current().enable_progress_bars = False
        suffixes = sorted(s.lstrip(".") for s in IMAGE_SUFFIXES)
        ds = ray.data.read_binary_files(_sources(inputs), include_paths=True, file_extensions=suffixes,
                                        num_cpus=READ_CPUS)
        # shipped as bytes where it is one file; a large ONNX file's weights live beside it (model.onnx.data),
        # past what Ray ships to each actor well: its path, which every node must then see
        shipped = str(path) if path.suffix == ".onnx" and onnx_files.companions(path) else path.read_bytes()
        kwargs = dict(artifact=shipped, file_name=path.name, backend=backend, device=device,
                      precision=precision, raw=raw, min_confidence=min_confidence, topk=topk)
        answers = ds.map_batches(Scorer, fn_constructor_kwargs=kwargs, batch_size=batch_size,
                                 **actor_options(backend, device))
        answers.write_parquet(output, ray_remote_args={"num_cpus": READ_CPUS})
        import pyarrow.dataset

        return pyarrow.dataset.dataset(output, format="parquet").count_rows()  # the footers: no second Ray job
    finally:
        if started:
            ray.shutdown()
