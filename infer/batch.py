"""Predict many user inputs at once: bad ones are reported by name, the rest still predicted."""
from __future__ import annotations

from dataclasses import dataclass, field

from ptx.contract import DEFAULT_RUNS_ROOT, InputKind
from ptx.errors import InputError

from .api import load
from .inputs import expand_csv_rows, expand_inputs
from .predictor import Prediction, Predictor, mark_low_confidence

CHUNK = 256  # images per predict_array call: large enough for throughput, small for memory


def tsv_field(text) -> str:
    """A file name with a tab or newline in it must not break the one-line-per-input output."""
    return str(text).replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


STDIN = "-"  # the argument that means: read one input from standard input


@dataclass
class PredictReport:
    predictor: Predictor
    results: list[Prediction] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # what was left out of folders on the way

    def lines(self, topk: int = 0) -> list[str]:
        out = []
        for r in self.results:
            source = tsv_field(r.source)
            if r.value is not None:
                out.append(f"{source}\ty={r.value:.6g}")
                continue
            label = f"? (low confidence: {r.label_name})" if r.low_confidence else r.label_name
            line = f"{source}\t{label}\t{r.probability:.4f}"
            if topk and r.label is not None:  # per-position outputs (a predicted string) have no top k
                line += "\t" + ", ".join(f"{name}:{p:.4f}" for name, p in r.topk(topk))
            out.append(line)
        return out

    def to_dict(self, topk: int = 0) -> dict:
        return {"model": self.predictor.contract.model, "backend": self.predictor.backend,
                "precision": self.predictor.precision,
                "results": [r.to_dict(k=topk) for r in self.results],
                "errors": [{"input": src, "error": err} for src, err in self.errors],
                "notices": self.notices}


def predict_inputs(args: list[str], *, model: str, backend: str | None = None, device: str | None = None,
                   precision: str | None = None,
                   artifact: str | None = None, root: str = DEFAULT_RUNS_ROOT, raw: bool = False,
                   run: str | None = None, recursive: bool = False, stdin: bytes | None = None,
                   min_confidence: float | None = None) -> PredictReport:
    """Predict command-line arguments: files, folders and globs (pictures), numbers, CSV rows or
    files, words; ``-`` is ``stdin``'s bytes (a picture file, or text: one input per line)."""
    predictor = load(artifact or model, backend=backend, root=root, device=device, precision=precision, run=run)
    report = PredictReport(predictor)
    kind = predictor.contract.kind
    items: list = []
    folders: list = []  # expanded picture arguments, whose folder notices count what was read
    for arg in args:
        if arg == STDIN and stdin is not None:
            if kind is InputKind.IMAGE:
                items.append(arg)
                continue
            try:
                items += predictor.text_lines(stdin, STDIN)
            except InputError as exc:
                report.errors.append((arg, str(exc)))
        elif kind is InputKind.VECTOR:
            rows, unreadable = expand_csv_rows([arg], predictor.contract.features)
            items += rows
            report.errors += unreadable
        elif kind in (InputKind.NUMBER, InputKind.TEXT):
            items.append(arg)
        else:
            expanded = expand_inputs([arg], recursive=recursive)
            items += expanded.items
            report.errors += expanded.errors
            report.notices += expanded.notices
            folders.append(expanded)
    samples, sources = [], []
    for item in items:
        picture_from_stdin = item == STDIN and stdin is not None and kind is InputKind.IMAGE
        try:
            samples.append(predictor.prepare_one(stdin if picture_from_stdin else item, raw=raw,
                                                 name=STDIN if picture_from_stdin else None))
            sources.append(item)
        except InputError as exc:
            report.errors.append((item, str(exc)))
    refused = {src for src, _ in report.errors}
    report.notices += [line for expanded in folders for line in expanded.folder_notices(refused)]
    for start in range(0, len(samples), CHUNK):
        report.results += mark_low_confidence(
            predictor.predict_samples(samples[start:start + CHUNK], sources[start:start + CHUNK]), min_confidence)
    return report
