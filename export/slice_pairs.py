"""onnxscript's SlicesSplit rewrite (two Slices of one tensor's last axis, halves -> one Split) with its second
Slice sought among the readers of the first one's input, instead of among every node of the graph.

torch.onnx's optimizer (onnxscript 0.7's optimize_ir, run by every torch.export-based export and by
export/weightless.py) matches SlicesSplit, a pattern of two output nodes, with a brute force: for each node
of the graph it lists every node of the graph by op type, then tries each Slice as the second one. A decoder
has a few Slices per layer (rotate_half's halves, the cache's), so the rule costs Slices x nodes: on a
24-layer Qwen2 graph of 6,000 nodes and 273 Slices, the rule alone took 46 s, and optimize_ir 59 s where it
takes 8.7 s with this matcher, the graph the same byte for byte (a 2-core AMD EPYC, 2026-11-29).

The pattern reads one tensor ``x`` in both Slices, so a second Slice that matches is always one of ``x``'s
readers in the same graph (not in an If's branch); those alone are tried, in the graph's order, where the brute
force meets them. The order matters: onnxscript takes the first pair that matches the pattern's shape and
checks the rule's condition on it alone (so a tensor's halves become a Split only where its upper half comes
first; on the Qwen2 graph, never). Each match is then made by onnxscript's own code (its _multi_match, the
rule's check and replacement): the same graph, found without the enumeration (tests/test_slice_pairs.py holds
both, a reader attached late and one inside a branch among them).

Within ``sibling_slices()`` (this thread's, around ptx's own exports) the rule's matcher is this one; other
callers of torch.onnx or onnxscript get onnxscript's own. Where onnxscript's internals are not the ones this
was written for (its private names, the rule's pattern), nothing is changed: its own search runs, slower.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from .thread_flag import ThreadFlag

_LOCK = threading.Lock()  # installing the matcher, once
_IN_PTX = ThreadFlag()


@contextmanager
def sibling_slices() -> Iterator[None]:
    """Within the block (this thread's), SlicesSplit tries as its second Slice only the first one's siblings."""
    _install()
    with _IN_PTX.raised():
        yield


def _install() -> None:
    """SlicesSplit's matcher replaced by SiblingSlices, once; nothing where onnxscript is not the one this was
    written for (its private names, the rule's pattern of two Slices): its own matcher runs then."""
    try:
        from onnxscript import rewriter
        from onnxscript.rewriter import _basics, _matcher  # noqa: F401 - the names SiblingSlices relies on

        simple = _matcher.SimplePatternMatcher
        if not all(hasattr(simple, name) for name in ("_init_match", "_multi_match", "match")):
            return
        with _LOCK:
            for rule in getattr(rewriter, "_DEFAULT_REWRITE_RULES", ()):
                own = getattr(rule, "_matcher", None)
                if getattr(rule, "name", None) == "SlicesSplit" and type(own) is simple and _two_slices(own.pattern):
                    rule._matcher = _matcher_class()(own.pattern)
    except Exception:  # noqa: BLE001 - another onnxscript: its own search, slower, never a failed export
        return


def _two_slices(pattern) -> bool:
    outputs = getattr(pattern, "output_nodes", ())
    return len(outputs) == 2 and all(n.op_identifier() == ("", "Slice", "") for n in outputs)


_CLASS = None


def _matcher_class():
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    from onnxscript.rewriter import _basics, _matcher

    class SiblingSlices(_matcher.SimplePatternMatcher):
        """SimplePatternMatcher whose second output node is sought among the readers of the first's input, in
        the graph's order."""

        def __init__(self, pattern):
            super().__init__(pattern)
            self._order: dict = {}  # node -> its place in the graph, built once a pass over it (see _in_order)

        def match(self, model, graph_or_function, node, *, verbose=0, remove_nodes=True, tracer=None):
            if not _IN_PTX:
                return super().match(model, graph_or_function, node, verbose=verbose, remove_nodes=remove_nodes,
                                     tracer=tracer)
            if not node.inputs or node.inputs[0] is None:  # no x: the pattern's first Slice reads one
                return _basics.MatchResult().fail("No match found.")
            self._tracer = tracer
            self._graph = node.graph
            wanted = self.pattern.output_nodes[1].op_identifier()
            readers = []
            for use in node.inputs[0].uses():  # a reader twice (two inputs) is one; a subgraph's is not this graph's
                reader = use.node
                if reader.graph is node.graph and reader.op_identifier() == wanted and reader not in readers:
                    readers.append(reader)
            match = None
            for other in self._in_order(graph_or_function, node, readers):
                self._init_match(verbose)
                match = self._multi_match((node, other), check_removable=remove_nodes)
                if match:
                    return match
            return match if match is not None else _basics.MatchResult().fail("No match found.")

        def _in_order(self, graph_or_function, node, readers: list) -> list:
            """``readers`` in the graph's order, where the brute force meets them (a reader list is in the order
            readers were attached, which a folded Identity changes). The places are listed once a pass (a pass
            starts at the graph's first node) and again where a reader is new: a rewrite inserts and removes
            nodes, never moves one, so the order of those listed holds."""
            if len(readers) < 2:
                return readers
            if next(iter(graph_or_function), None) is node or any(r not in self._order for r in readers):
                self._order = {n: i for i, n in enumerate(graph_or_function)}
            return sorted(readers, key=self._order.__getitem__)

    _CLASS = SiblingSlices
    return _CLASS
