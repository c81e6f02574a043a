"""``--locate``'s words: what origin.py found, as a person reads it. Every number beside its scale
(max abs, the relative error ||diff|| / ||reference||, the largest |value|), a long path folded to
the first departure, its largest jumps and the output (``--json`` holds every step)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from ptx.contract.error_model import SCALE_WORDS

from .triage import TOP, keep_line, ranked

JUMPS = 3  # the largest jumps a folded path keeps
FOLD = 12  # a path longer than this is folded


@dataclass
class Step:
    """One node on the path from the inputs to the output that departs most, and its error there."""

    node: str
    op: str
    output: str
    max_abs: float
    departs: bool
    module: str | None
    rel: float | None = None
    magnitude: float | None = None


def _error(d: dict, tolerance: bool = True) -> str:
    sqnr = f" (SQNR {d['sqnr_db']:.1f} dB)" if d.get("sqnr_db") is not None else ""
    return (f"max abs {d['max_abs']:.2e}, rel {d['rel']:.1e}{sqnr} on values up to {d['magnitude']:.1e}"
            + (f" (atol {d['atol']:g} + rtol {d['rtol']:g} x {SCALE_WORDS})" if tolerance else ""))


def _shown(source: str) -> str:
    """``FILE:LINE`` as the reader named the file: relative to the working folder where it lies under it
    (the exporter records the absolute path; ``--json`` keeps it)."""
    path, _, line = source.rpartition(":")
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return source
    return f"{relative}:{line}" if path and not relative.startswith(os.pardir) else source


def _node_lines(d: dict) -> list[str]:
    lines = []
    if d.get("module"):
        cls = f" ({d['class']})" if d.get("class") else ""
        rule = (f"; {d['folded']} folded into it by the exporter's {d['rule']}" if d.get("folded") else
                f"; the exporter's {d['rule']} rule made this node" if d.get("rule") else "")
        lines.append(f"  module {d['module']}{cls}{rule}")
        if d.get("source"):
            lines.append(f"  at {_shown(d['source'])}: {d['code']}")
    for i in d["inputs"]:
        if i.get("unmatched"):
            lines.append(f"  reads {i['name']} (computed): not compared: {i['unmatched']}")
            continue
        head = f"  reads {i['name']} ({i['kind']}, {i['shape']}): "
        if not i["kind"].startswith("weight"):
            scale = f"  max |value| {i['magnitude']:.2e}" if i.get("magnitude") is not None else ""
            rel = f", rel {i['rel']:.1e}" if i.get("rel") is not None else ""
            lines.append(f"{head}max abs {i['max_abs']:.2e}{rel}{scale}")
            continue
        scale = f"max |value| {i['magnitude']:.2e}"
        if i.get("folded"):  # compared with what the other file's weight came from
            scale = f"against it with {', '.join(i['folded'])} folded in, as the other file holds it; {scale}"
        if i.get("not_compared"):
            lines.append(f"{head}not compared: {i['not_compared']}; {scale}")
        elif i.get("max_abs") is None:
            lines.append(head + scale)
        elif i.get("rel") is None:
            lines.append(f"{head}max abs {i['max_abs']:.2e}  {scale}")
        elif i.get("stored") and i["stored"] not in ("float32", "float64"):
            beyond = (f"{i['overflow']} value{'s' * (i['overflow'] != 1)} beyond its largest (6.55e+04), "
                      if i.get("overflow") else "")
            lines.append(f"{head}stored as {i['stored']} in the other file, {beyond}rounding error max abs "
                         f"{i['max_abs']:.2e}, rel {i['rel']:.1e}; {scale}")
        else:
            what = "differs between the two files" if i["departs"] else "the same in both files"
            lines.append(f"{head}{what}: max abs {i['max_abs']:.2e}, rel {i['rel']:.1e}; {scale}")
    return lines


def _with(d: dict) -> str:
    """', with the nodes folded into it', where the other file folded some into the node named."""
    folded = [n for n in d.get("nodes", ()) if n != d["node"]]
    return f", with {', '.join(folded)}" if folded else ""


def _born(d: dict) -> str:
    changed = [i["name"] for i in d["inputs"] if i["kind"].startswith("weight") and i.get("departs")
               and not (i.get("stored") and i["stored"] not in ("float32", "float64"))]
    carried = [i["name"] for i in d["inputs"] if not i["kind"].startswith("weight") and i.get("departs")]
    if carried:
        return f"one of its inputs departs too ({', '.join(carried)})"
    return "its computed inputs agree" + (f"; its weight {', '.join(changed)} differs between the two files"
                                          if changed else "")


def fold(path: list[Step]) -> list[Step | int]:
    """The first step, the JUMPS largest rises of the relative error, the last; a number stands for
    the steps left out between."""
    if len(path) <= FOLD:
        return list(path)
    rises = sorted(range(1, len(path) - 1), key=lambda i: -((path[i].rel or 0) / max(path[i - 1].rel or 0, 1e-30)))
    keep = sorted({0, len(path) - 1, *rises[:JUMPS]})
    shown: list[Step | int] = []
    for a, b in zip(keep, keep[1:] + [None]):
        shown.append(path[a])
        if b is not None and b - a > 1:
            shown.append(b - a - 1)
    return shown


def path_lines(path: list[Step]) -> list[str]:
    shown = fold(path)
    steps = [s for s in shown if isinstance(s, Step)]
    width, ops = max(len(s.node) for s in steps), max(len(s.op) for s in steps)
    folded = (f" ({len(path)} steps: the first, the {JUMPS} largest rises of the relative error and the last; "
              "--json holds every step)" if len(path) > FOLD else "")
    lines = [f"path to output {path[-1].output}{folded}:",
             f"  {'node':<{width}}  {'op':<{ops}}  {'max abs':>8}  {'rel':>7}  {'|value|':>7}"]
    for s in shown:
        if isinstance(s, int):
            lines.append(f"  {'...':<{width}}  {s} step{'s' * (s != 1)}")
            continue
        rel = f"{s.rel:.1e}" if s.rel is not None else "-"
        scale = f"{s.magnitude:.1e}" if s.magnitude is not None else "-"
        where = f"  {s.module}" if s.module else ""
        lines.append(f"  {s.node:<{width}}  {s.op:<{ops}}  {s.max_abs:.2e}  {rel:>7}  {scale:>7}  "
                     f"{'beyond' if s.departs else 'within'}{where}")
    return lines


def added_lines(located) -> list[str]:
    shown = [a for a in located.added[:TOP] if a["departs"]] or located.added[:1]
    if not shown:
        return []
    if not shown[0]["departs"]:
        a = shown[0]
        return [f"error each node adds alone (computed by {located.other} from {located.reference}'s tensors at its "
                f"inputs): none departs beyond the tolerance; the largest, {a['node']} ({a['op']}), "
                f"rel {a['rel']:.1e} (SQNR {a['sqnr_db']:.1f} dB), max abs {a['max_abs']:.1e}"]
    lines = [f"error each node adds alone (computed by {located.other} from {located.reference}'s tensors at its "
             f"inputs as it holds them; rel = ||diff|| / ||reference||, SQNR = -20 log10 rel; adds = rel - what its "
             f"inputs' own rounding brings), the {len(shown)} largest of {len(located.added)}:"]
    # every row shown departs here; a unit with nodes folded into it names them, then its module
    lines += ranked(shown, 1, [(f" (with {', '.join(n for n in a['nodes'] if n != a['node'])})" if len(a["nodes"]) > 1
                                else "") + (f"  {a['module']}" if a.get("module") else "") for a in shown])
    named = (located.origin or located.first or {}).get("node")
    if shown[0].get("inputs") and shown[0]["node"] != named:  # what it reads, unless said above already
        lines += [f"  {shown[0]['node']}" + line[1:] for line in _node_lines({"inputs": shown[0]["inputs"]})]
    if located.keep:
        lines.append(keep_line(located.keep) + f" (on {located.case})")
    return lines


def located_text(located) -> str:
    how = (f"{located.nodes} nodes, each as it runs and alone: {located.questions} piece"
           f"{'s' * (located.questions != 1)} of at most {located.widest / 2 ** 20:.1f} MiB to each side"
           if "sweep" in located.values else
           f"{located.questions} questions, modules replayed on the graph's own tensors, of {located.nodes} nodes")
    lines = [f"where it is born: {located.other} vs {located.reference}, {located.file}, on {located.case} ({how})"]
    o, f, r = located.origin, located.first, located.region
    if o is not None and "alone" not in o:  # a TorchScript module replayed on the graph's own input
        lines.append(f"origin: node {o['node']} ({o['op']}), output {o['output']}: max abs {o['max_abs']:.2e} "
                     f"(atol {o['atol']:g} + rtol {o['rtol']:g} x {SCALE_WORDS}), {o['born']}")
    elif o is not None:
        lines.append(f"origin: node {o['node']} ({o['op']}{_with(o)}), output {o['output']}: {_error(o)}; "
                     f"{_born(o)}, and "
                     f"alone, fed {located.reference}'s inputs, it departs too (max abs {o['alone']['max_abs']:.2e}): "
                     "born here" + ("; reduced precision departs from here on: where the error is added most is "
                                    "ranked below" if located.reduced else ""))
    elif f is not None:
        why = ("reduced precision departs from the first layer on: where the error is added is below" if located.reduced
               else "not computed alone (it holds an If/Loop/Scan body): no origin is claimed" if f.get("alone") is None
               else "no origin: alone, fed the same inputs, it agrees (the difference needs more of the graph)")
        pieces = " (run in pieces, see the note)" if f.get("in_pieces") else ""
        lines.append(f"first departure{pieces}: node {f['node']} ({f['op']}{_with(f)}), output {f['output']}: "
                     f"{_error(f)}; "
                     f"{_born(f)}; {why}")
    lines += _node_lines(o or f) if o or f else []  # what the node named reads
    if r is not None:
        e = r["error"]
        lines.append(f"region: {len(r['nodes'])} nodes, {r['first']} .. {r['last']} ({', '.join(r['ops'])}), "
                     f"computed alone by {located.other} from {located.reference}'s tensors at the cut before them "
                     f"({', '.join(r['inputs'])}): output {e['name']} departs, {_error(e, tolerance=False)}; "
                     "one node fewer at either end, it agrees; "
                     + ("each node alone agrees: the runtime computes them together (a fusion)"
                        if not r["alone_departs"]
                        else f"{r['alone_departs']} of its nodes depart alone too"))
    elif o is None and located.searched:
        lines.append("no origin and no region: no node, and no window of nodes, departs when computed alone from "
                     f"{located.reference}'s tensors; the difference needs the whole graph")
    lines += added_lines(located)
    if located.path:
        lines += path_lines(located.path)
    return "\n".join(lines + located.notes)
