"""One pass over a graph in its order, a budget of tensors at a time, that measures each tensor two ways:

- **as it runs** (free-running): the other side's counterpart tensor against the reference's, both
  sides run whole: where the difference first departs, and how it grows to the output;
- **alone** (teacher-forced): each unit of the reference (pairs.py: a node, with the nodes folded
  into it) computed by the other side from the *reference's* tensors at its inputs, so that what it
  departs by is the error it adds itself, whatever its inputs carried (onnx-diagnostic's
  side-by-side; ORT's qdq_loss_debug pairs the activations but lets errors accumulate). All the
  units of one question run side by side in one model (graph.region_model), one session.

The observation is checked: every question asks each side for its graph's outputs too, and a side
whose outputs move once intermediate tensors are asked for (a runtime that fuses across the cut:
OpenVINO's attention) is not trusted any further as it runs; what it computes alone still is.

Each question holds at most the memory plan's ``piece_budget()`` in tensors per side (more only where one
node's outputs are larger), sized before it runs from the bytes shape inference gives each tensor on the
case (graph.sizes), and keeps only scalar errors between questions: peak memory stays near a plain run's.

A side asks the runner of a verify row's own variant (infer/runtime: ``run(feeds, outputs=names)``)
about a copy of its graph that outputs the tensors wanted, or a piece of it run as a model of its
own: a row is traced on the runtime, device and precision it ran. onnx and numpy here, never torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ptx.contract.comparison import EXACT, OutputAgreement, compare_output
from ptx.contract.schema import Tolerance
from ptx.errors import ModelRunError, PtxError, first_line

from ..runtime import backends as registry
from ..runtime.memory_plan import piece_budget
from .graph import LocateGraph
from .pairs import Counterparts, Unit

FIRST = 4  # nodes in the first piece, before their size is known (a detector's first layers are its widest)
ToleranceOf = Callable[[str, str], Tolerance]  # (tensor name, dtype) -> its tolerance


class Side:
    """Values of named tensors of ``graph`` for ``feeds``, computed by the runner of the registry's
    variant ``runs`` (a verify row's label: ort-cpu, ort-cpu-int8, openvino-bf16, onnx.reference);
    ``label`` names it where it is not that (an --against file's row). Nothing is kept between questions."""

    def __init__(self, graph: LocateGraph, feeds: Mapping[str, np.ndarray], runs: str = "ort-cpu",
                 label: str | None = None):
        try:
            found = [(b, d, p) for b, d, p in registry.variants([runs]) if b.label(d, p) == runs]
        except PtxError:  # no variant's label (a sample against itself in a batch)
            found = []
        if len(found) != 1 or "onnx" not in found[0][0].kinds:
            raise PtxError(f"--locate cannot ask {runs} for intermediate tensors; give --backends with another backend")
        backend, self.device, self.precision = found[0]
        self.backend = registry.get(backend.traced_by) if backend.traced_by else backend
        self.graph, self.feeds = graph, dict(feeds)
        self.label = label or self.backend.label(self.device, self.precision)

    @property
    def inputs(self) -> dict[str, np.ndarray]:
        """The feeds the graph takes as its inputs."""
        return {i: self.feeds[i] for i in self.graph.graph_inputs if i in self.feeds}

    def values(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The graph's tensors ``names`` on the feeds: one run of a copy that outputs them."""
        wanted = [n for n in dict.fromkeys(names) if n in self.graph.produced_at]
        got = {n: self.feeds[n] for n in names if n in self.feeds}
        if wanted:
            got.update(self.run(self.graph.marked(wanted), self.feeds, wanted))
        return got

    def run(self, path: Path, feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
        """The model file at ``path`` (a marked copy, a region) run on ``feeds`` (those it reads): ``names``' values."""
        try:
            return self._run(path, feeds, list(names))
        except Exception as exc:  # noqa: BLE001 - a runner's one-line errors, and a runtime's own types
            invalid = invalid_model(path)
            if invalid:  # ptx built it (a marked copy, a region, a file with nodes kept in f32): say what is wrong
                raise ModelRunError(f"{path.name}, cut from {self.graph.path.name}, is not a valid ONNX model "
                                    f"({invalid[:300]})") from None
            raise ModelRunError(f"{self.label} cannot give the intermediate tensors of {self.graph.path.name} "
                                f"({first_line(exc)[:300]})") from None

    def regions(self, regions: Sequence[tuple], fed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Pieces of the graph, each (prefix, nodes, outputs, ...), run side by side as one model
        (graph.region_model) on ``fed``: their outputs, under their prefixed names."""
        names = [prefix + o for prefix, _, outputs, *_ in regions for o in outputs]
        return self.run(self.graph.save(self.graph.region_model(regions, fed)), fed, names) if names else {}

    def _run(self, path: Path, feeds: Mapping[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
        # a session run once returns its memory at the end, not to an arena it keeps
        options = {"arena": False} if self.backend.name.startswith("ort-") else {}
        runner = self.backend.open(path, self.device, self.precision, **options)
        try:
            inputs = runner.signature.input_names
            return runner.run({k: v for k, v in feeds.items() if k in inputs}, outputs=names)
        finally:
            # freed blocks given back (each piece's buffers), without a collector's pass per question:
            # it was a third of a locate's time on PaddleOCR's detector (190 runners)
            runner.close(collect=False)


def invalid_model(path: Path) -> str | None:
    """Why onnx.checker refuses the model at ``path`` (with its shapes inferred), or None: a runtime
    says only "invalid model" and the file's name, which is a temporary one the user never sees."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # noqa: BLE001 - the checker's ValidationError and shape inference's own
        return " ".join(str(exc).split())
    return None


def tensor_error(name: str, got, want, tolerance_of: ToleranceOf) -> OutputAgreement:
    """ptx's one comparison (ptx.contract.comparison) under the tensor's tolerance, without verify's
    histogram; its dict keeps infinities as floats, which locate's words format."""
    want = np.asarray(want)
    return compare_output(name, got, want, tolerance_of(name, str(want.dtype)), detail=False)


@dataclass
class Alone:
    """One unit computed by the other side from the reference's tensors: the error it adds itself."""

    unit: Unit
    error: OutputAgreement  # its worst output's
    # What its inputs bring in even so: the largest relative error of the reference's values as the
    # other side holds them (quantized by their QuantizeLinear, cast to float16). A node reading a
    # saturated int8 tensor is not blamed for the saturation; the node that wrote it is.
    carried: float = 0.0


@dataclass
class Sweep:
    """What one pass found (see the module's docstring)."""

    pairs: Counterparts
    reference: Side
    other: Side
    tolerance_of: ToleranceOf
    free: dict[str, OutputAgreement] = field(default_factory=dict)  # reference tensor -> as it runs
    alone: dict[int, Alone] = field(default_factory=dict)  # unit's node -> computed alone
    segments: list[tuple[int, int]] = field(default_factory=list)  # each piece's (first, last) node
    outputs: dict[str, OutputAgreement] = field(default_factory=dict)  # the graph outputs, unmarked
    whole: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # the reference's, unmarked (keep_f32's)
    untrusted: str | None = None  # why the other side's tensors as it runs are not trusted, or None
    moved: str | None = None  # a note where cutting moves the other's outputs, though not enough to distrust
    unmeasured: list[int] = field(default_factory=list)  # units not computed alone (a body inside, too far)
    refused: str | None = None  # why the other side could not compute some units alone
    notes: list[str] = field(default_factory=list)
    questions: int = 0
    widest: int = 0  # bytes of the largest question to one side

    @property
    def graph(self) -> LocateGraph:
        return self.pairs.ref

    def output_pairs(self) -> list[tuple[str, str]]:
        """(reference output, the other's): the same name, else the same place (tools keep them)."""
        theirs = self.pairs.other.output_names
        return [(o, o if o in theirs else theirs[k] if k < len(theirs) else o)
                for k, o in enumerate(self.graph.output_names)]

    def output_errors(self, want: Mapping, got: Mapping) -> dict[str, OutputAgreement]:
        """The other side's graph outputs ``got`` against the reference's ``want``, by the reference's names."""
        return {r: tensor_error(r, got[o], want[r], self.tolerance_of) for r, o in self.output_pairs() if o in got}

    def run(self, progress: Callable[[str], None] = lambda _: None, as_it_runs: bool = True) -> "Sweep":
        """The graph in segments, each run by both sides as a model of its own from the tensors at the
        cut before it (each side its own: a chain as it runs), then its units alone. Without
        ``as_it_runs`` (a triage, which ranks units alone), the other side computes the units alone only."""
        graph, pairs = self.graph, self.pairs
        outs = self.output_pairs()
        if as_it_runs:
            unmarked = (self.reference.values([r for r, _ in outs]), self.other.values([o for _, o in outs]))
            self.outputs = self.output_errors(*unmarked)
            self.whole = unmarked[0]  # the graph's outputs only: what keeping nodes in f32 is measured against
        order = graph.order
        progress(f"locating: {self.other.label} against {self.reference.label}, {len(order)} nodes, each as it runs "
                 "and alone")
        mine, theirs = self.reference.inputs, self.other.inputs
        start, size = 0, FIRST
        budget = piece_budget()  # the memory plan's: a share of the verify's peak before it
        sizes = graph.sizes(self.reference.feeds)
        live = live_bytes(graph, sizes) if sizes else None
        while start < len(order):
            end = self._end(order, start, size, budget, sizes, live)
            chunk = order[start:end + 1]
            mine, theirs, held = self._segment(chunk, mine, theirs if as_it_runs else None)
            start += len(chunk)
            size = max(1, min(2 * size, int(budget * len(chunk) / max(held, 1))))
        if as_it_runs:
            self._check(unmarked, {r: mine[r] for r, _ in outs if r in mine},
                        {o: pairs.decode(r, theirs[pairs.of[r]]) for r, o in outs if pairs.of.get(r) in theirs})
        return self

    def _end(self, order: Sequence[int], start: int, size: int, budget: int, sizes: Mapping[str, int],
             live: Sequence[int] | None) -> int:
        """The last position in ``order`` of the piece that starts at ``start``: as many nodes as the
        bytes of the tensors they make and of those alive after them fit in ``budget`` (one at least),
        where the graph's tensors are sized (graph.sizes); else ``size`` nodes. Then on to a cut where
        every live tensor has a counterpart. Sized beforehand, a piece no longer overshoots where the
        tensors widen (a detector's neck and head: pieces of 70-90 MiB under a 16 MiB budget, sized
        from the bytes per node of the piece before)."""
        graph = self.graph
        if live is None:
            end = min(start + size, len(order)) - 1
        else:
            end, made = start, made_bytes(graph, order[start], sizes)
            while end + 1 < len(order):
                more = made + made_bytes(graph, order[end + 1], sizes)
                if more + live[order[end + 1]] > budget:
                    break
                end, made = end + 1, more
        while end + 1 < len(order) and any(t not in self.pairs.of for t in graph.cut(order[end])):
            end += 1  # a cut only where every live tensor has a counterpart
        return end

    def _segment(self, chunk: Sequence[int], mine: dict, theirs: dict) -> tuple[dict, dict, int]:
        """Measure the nodes ``chunk``: (the reference's tensors at the cut after it, the other's, the
        bytes the reference's answer held). The other side runs its piece and the units alone in one
        model (one session, one OpenVINO compile); apart where the two cannot run together."""
        graph, pairs = self.graph, self.pairs
        made = [o for k in chunk for o in graph.nodes[k].output if graph.comparable(o)]
        bound = graph.cut(chunk[-1])
        want = self._piece(self.reference, mine, list(dict.fromkeys(made + bound)))
        held = sum(np.asarray(v).nbytes for v in want.values())
        self.widest = max(self.widest, held)
        self.questions += 1
        known = {**mine, **want}
        regions, fed = self._regions([u for u in (pairs.unit(k) for k in chunk) if u is not None], known)
        asked = list(dict.fromkeys(pairs.of[o] for o in made + bound if o in pairs.of)) if theirs is not None else []
        theirs = theirs or {}
        try:
            got = self._piece(self.other, theirs, asked, regions, fed)
        except ModelRunError:  # a unit that cannot run on these values (a counterpart of another shape)
            got = self._piece(self.other, theirs, asked)
            regions = self._shapes(made + bound, want, got, regions)
            try:
                got.update(self.other.regions(regions, fed))
            except ModelRunError as exc:  # what runs whole may not run in pieces: said, the rest goes on
                self.unmeasured += [r[3].node for r in regions]
                self.refused = self.refused or str(exc)
        self.free.update({e.name: e for e in self.errors(got, want, made)})
        self._judge_alone(regions, got, known)
        self.segments.append((chunk[0], chunk[-1]))
        return ({t: want[t] for t in bound if t in want},
                {pairs.of[t]: got[pairs.of[t]] for t in bound if t in pairs.of and pairs.of[t] in got}, held)

    def _piece(self, side: Side, cut: dict, names: list[str], regions=(), fed=None) -> dict:
        """``names`` computed by ``side`` from the tensors at the cut before them (``cut``; a tensor of
        it still alive after the piece is passed on as it is), and ``regions`` beside them."""
        asked = [n for n in names if n not in cut]
        nodes = side.graph.walk_back(asked, set(cut))
        got = side.regions([("", nodes, asked), *regions], {**cut, **side.inputs, **(fed or {})})
        return {**{n: cut[n] for n in names if n in cut}, **got}

    def fed(self, prefix: str, names: Sequence[str], want: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What a region of the other graph named ``prefix`` reads: the reference's values of ``names``
        as the other side holds their counterparts, and the graph's inputs."""
        pairs = self.pairs
        return {**{prefix + pairs.of[n]: pairs.encode(n, want[n]) for n in names},
                **{prefix + i: value for i, value in self.other.inputs.items()}}

    def errors(self, got: Mapping, want: Mapping, names: Sequence[str], prefix: str = "") -> list[OutputAgreement]:
        """The other side's values of ``names``' counterparts (``got``, under ``prefix``) against the
        reference's (``want``), for each that both hold."""
        pairs = self.pairs
        return [tensor_error(n, pairs.decode(n, got[prefix + pairs.of[n]]), want[n], self.tolerance_of)
                for n in names if n in want and n in pairs.of and prefix + pairs.of[n] in got]

    def _shapes(self, names, want: dict, got: dict, regions: list) -> list:
        """A name shared by tensors of other shapes is no counterpart: dropped, with the units reading it."""
        pairs = self.pairs
        for o in names:
            name = pairs.of.get(o)
            if name in got and np.shape(got[name]) != np.shape(want[o]):
                del pairs.of[o]
                pairs.none[o] = (f"{pairs.other.path.name}'s {name} has shape {list(np.shape(got[name]))}, the "
                                 f"reference's {list(np.shape(want[o]))}")
        # a unit's tensors all had counterparts when it was made (Counterparts.unit): those dropped just now have none
        return [r for r in regions if all(t in pairs.of for t in (*r[3].inputs, *r[3].outputs))]

    def _check(self, unmarked, mine: dict, theirs: dict) -> None:
        """Whether each side, run in pieces, answered as it does whole. The reference must; the other
        is trusted as it runs only where its outputs moved by less than a tenth of what it departs by."""
        for k, (side, got) in enumerate(((self.reference, mine), (self.other, theirs))):
            moved = [tensor_error(n, got[n], unmarked[k][n], self.tolerance_of) for n in got if n in unmarked[k]]
            worst = max((e for e in moved if e.departs), key=lambda e: e.excess, default=None)
            if worst is None:
                continue
            if k == 0:  # its tensors are still what both sides are fed; said, since they are not its whole answer
                self.notes.append(f"note: {side.label}, the reference, answers differently run in pieces (output "
                                  f"{worst.name} moves by {worst.max_abs:.2e}): the tensors it gives are its pieces'")
                continue
            apart = max((e.max_abs for e in self.outputs.values()), default=0.0)
            said = f"{side.label} answers differently run in pieces (output {worst.name} moves by {worst.max_abs:.2e}"
            if worst.max_abs < 0.1 * apart:
                self.moved = f"note: {said}, a tenth or less of the {apart:.2e} it departs by)"
                continue
            again = side.values(list(theirs))
            varies = max((tensor_error(n, again[n], unmarked[1][n], self.tolerance_of).max_abs for n in again
                          if n in unmarked[1]), default=0.0)
            self.untrusted = (f"{said} from its own answer whole" + (
                f"; it also varies from run to run, by {varies:.2e} between two whole runs)" if varies > 0 else
                "): it computes across the cuts, as a runtime that fuses nodes does"))

    def _regions(self, units: Sequence[Unit], want: dict) -> tuple[list, dict]:
        """Each unit as a region of the other graph (prefix, nodes, outputs, unit), fed the reference's
        values as the other side holds them."""
        pairs = self.pairs
        regions, fed = [], {}
        for unit in units:
            nodes = pairs.region(unit)
            if nodes is None or any(pairs.other.has_body(k) for k in nodes) or not all(i in want for i in unit.inputs):
                self.unmeasured.append(unit.node)
                continue
            regions.append((f"u{unit.node}/", nodes, [pairs.of[o] for o in unit.outputs], unit))
            fed.update(self.fed(f"u{unit.node}/", unit.inputs, want))
        return regions, fed

    def _judge_alone(self, regions: list, got: dict, want: dict) -> None:
        for prefix, _, _, unit in regions:
            errors = self.errors(got, want, unit.outputs, prefix)
            if errors:
                carried = max((_held(self.pairs, i, want[i]) for i in unit.inputs if i in want), default=0.0)
                self.alone[unit.node] = Alone(unit, max(errors, key=lambda e: (e.problem is not None, e.rel)), carried)


def _held(pairs: Counterparts, name: str, value) -> float:
    """The relative error of ``value`` as the other side holds ``name``'s counterpart (0: exactly)."""
    value = np.asarray(value)
    if name not in pairs.coded and pairs.other.dtype_of(pairs.of[name]) in (None, value.dtype):
        return 0.0
    held = compare_output(name, pairs.decode(name, pairs.encode(name, value)).astype(value.dtype), value,
                          EXACT, detail=False)
    return held.rel if held.reference_sq > 0 else 0.0


def made_bytes(graph: LocateGraph, k: int, sizes: Mapping[str, int]) -> int:
    """Bytes of the comparable tensors node ``k`` makes."""
    return sum(sizes.get(o, 0) for o in graph.nodes[k].output if o and graph.comparable(o))


def live_bytes(graph: LocateGraph, sizes: Mapping[str, int]) -> list[int]:
    """For each node, the bytes of the comparable tensors alive after it (graph.cut's, summed): each
    tensor counted from the node that makes it to its last reader, in one pass."""
    change = [0] * (len(graph.nodes) + 1)
    for name, at in graph.produced_at.items():
        last = graph.last_use.get(name, -1)
        if at < last and graph.comparable(name):
            change[at] += sizes.get(name, 0)
            change[last] -= sizes.get(name, 0)
    return list(np.cumsum(change[:-1], dtype=np.int64)) if graph.nodes else []


