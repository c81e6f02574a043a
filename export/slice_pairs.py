"""onnxscript's SlicesSplit rewrite (two Slices of one tensor's last axis, halves -> one Split) with its second
Slice sought among the readers of the first one's input, instead of among every node of the graph.

torch.onnx's optimizer (onnxscript 0.7's optimize_ir, run by every torch.export-based export and by
export/weightless.py) matches SlicesSplit, a pattern of two output nodes, with a brute force: for each node
of the graph it lists every node of the graph by op type, then tries each Slice as the second one. A decoder
has a few Slices per layer (rotate_half's halves, the cache's), so the rule costs Slices x nodes: on a
24-layer Qwen2 graph of 6,000 nodes and 273 Slices, the rule alone took 46 s, and optimize_ir 60 s where it
takes 7.3 s with this matcher, the graph the same byte for byte (a 2-core AMD EPYC, 2026-11-29). The pattern reads one tensor ``x`` in both Slices, so a second
Slice that matches is always one of ``x``'s readers; those alone are tried, in the order they became readers
(the order the exporter wrote them: the graph's order, where the brute force meets them). The order matters:
onnxscript takes the first pair that matches the pattern's shape and checks the rule's condition on it alone
(so a tensor's halves become a Split only where its upper half is read first; on the Qwen2 graph, never).
Each match is then made by onnxscript's own code (its _multi_match, the rule's check and replacement): the same
graph, found without the enumeration (tests/test_slice_pairs.py holds both).

Within ``sibling_slices()`` (this thread's, around ptx's own exports) the rule's matcher is this one; other
callers of torch.onnx or onnxscript get onnxscript's own. Where onnxscript's internals are not the ones this
was written for (no SlicesSplit rule among the defaults, another matcher), nothing is changed.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

_LOCK = threading.Lock()  # installing the matcher, once
_IN_PTX = threading.local()


@contextmanager
def sibling_slices() -> Iterator[None]:
    """Within the block (this thread's), SlicesSplit tries as its second Slice only the first one's siblings."""
    _install()
    before = getattr(_IN_PTX, "on", False)
    _IN_PTX.on = True
    try:
        yield
    finally:
        _IN_PTX.on = before


def _install() -> None:
    try:
        from onnxscript import rewriter
        from onnxscript.rewriter import _matcher
    except ImportError:
        return
    rules = [rule for rule in getattr(rewriter, "_DEFAULT_REWRITE_RULES", ()) if getattr(rule, "name", None) ==
             "SlicesSplit"]
    with _LOCK:
        for rule in rules:
            own = getattr(rule, "_matcher", None)
            if type(own) is _matcher.SimplePatternMatcher:
                rule._matcher = _matcher_class(_matcher)(own.pattern)


_CLASS = None


def _matcher_class(_matcher):
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    import onnx_ir as ir
    from onnxscript.rewriter import _basics

    class SiblingSlices(_matcher.SimplePatternMatcher):
        """SimplePatternMatcher whose second output node is sought among the readers of the first's input."""

        def match(self, model, graph_or_function, node, *, verbose=0, remove_nodes=True, tracer=None):
            outputs = self.pattern.output_nodes
            if not getattr(_IN_PTX, "on", False) or len(outputs) != 2:
                return super().match(model, graph_or_function, node, verbose=verbose, remove_nodes=remove_nodes,
                                     tracer=tracer)
            if not node.inputs or node.inputs[0] is None:  # no x: the pattern's first Slice reads one
                return _basics.MatchResult().fail("No match found.")
            self._tracer = tracer
            self._graph = graph_or_function if isinstance(graph_or_function, ir.Graph) else graph_or_function.graph
            wanted = outputs[1].op_identifier()
            readers = []
            for use in node.inputs[0].uses():  # a reader of x twice (two inputs) is one candidate
                reader = use.node
                if reader.op_identifier() == wanted and reader not in readers:
                    readers.append(reader)
            match = None
            for other in readers:
                self._init_match(verbose)
                match = self._multi_match((node, other), check_removable=remove_nodes)
                if match:
                    return match
            return match if match is not None else _basics.MatchResult().fail("No match found.")

    _CLASS = SiblingSlices
    return _CLASS
