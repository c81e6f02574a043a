"""Issue 76, item 3: --locate within 2x a plain verify's memory and 5x its time on PaddleOCR's
detector. A sweep sizes its pieces by their tensors' bytes before it runs them (sized from the piece
before, a piece overshot where the tensors widen: 6x the largest tensor under a budget of 3x), and
its one-question runners close without a garbage collector's full pass (a third of the time there).
The processes' peaks and times on the real files are scripts/bench_locate.py's (docs/benchmarks/locate.md)."""
from __future__ import annotations

import gc

import numpy as np
import pytest

from locate_nets import detector, pictures
from ptx.contract.schema import Tolerance
from ptx.infer.locate import sweep
from ptx.infer.locate.graph import LocateGraph
from ptx.infer.locate.pairs import Counterparts

TOLERANCE = lambda name, dtype: Tolerance(1e-4, 1e-3)  # noqa: E731


@pytest.mark.parametrize("blocks", [4, 10])
def test_no_piece_holds_more_than_its_budget_where_the_tensors_widen(tmp_path, monkeypatch, blocks):
    """The detector's neck concatenates upsampled maps: its tensors are the widest, after a stage of
    the narrowest. Under a budget of three of its largest tensors (every node fits alone), no piece's
    answer holds more."""
    feeds = {"x": pictures(2, 64)}
    with LocateGraph.open(detector(tmp_path / "det.onnx", blocks=blocks, channels=8)) as graph:
        every = sweep.Side(graph, feeds).values([n for n in graph.produced_at if graph.comparable(n)])
        budget = 3 * max(v.nbytes for v in every.values())
        monkeypatch.setattr(sweep, "piece_budget", lambda: budget)
        found = sweep.Sweep(Counterparts.match(graph, graph), sweep.Side(graph, feeds), sweep.Side(graph, feeds),
                            TOLERANCE).run()
    assert len(found.segments) > 1 and found.free, found.segments
    assert found.widest <= budget, (found.widest / budget, found.segments)


def test_a_sides_runners_close_without_the_collectors_full_pass(tmp_path, monkeypatch):
    """Each question opens a runner and closes it; the collector's full pass on each close was 60 ms
    in a process holding verify's objects, a third of a locate on the detector."""
    passes = []
    monkeypatch.setattr(gc, "collect", lambda *a: passes.append(a) or 0)
    with LocateGraph.open(detector(tmp_path / "det.onnx", blocks=1)) as graph:
        got = sweep.Side(graph, {"x": pictures(2, 32)}).values(graph.output_names)
    assert set(got) == set(graph.output_names) and all(np.isfinite(v).all() for v in got.values())
    assert passes == []
