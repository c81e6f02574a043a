"""The option types and option groups ptx's commands share: finite floats, case-blind choices, devices,
backends, tolerances, --run and --force; and for a user's own model file (inspect, verify, bench, predict,
serve, export) how its inputs are declared and where its batch is (``@model_file_options``), and how
generated inputs are made (``@generated_input_options``), handed to the library as
``open_options(...)`` / ``plan_options(...)``.
"""
from __future__ import annotations

import copy
import functools
import math

import click

from ptx.contract.tensors import parse_assignments, parse_batch_axes, parse_declaration


class FiniteFloat(click.ParamType):
    """A float that must be finite and above (or at least) ``minimum``: NaN and Inf are usage errors,
    where click's FloatRange lets NaN through."""

    name = "float"

    def __init__(self, minimum: float = 0.0, open_min: bool = False):
        self.minimum, self.open_min = minimum, open_min

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if number < self.minimum or (self.open_min and number == self.minimum):
            self.fail(f"{value!r} must be {'>' if self.open_min else '>='} {self.minimum:g}", param, ctx)
        return number


def Choice(choices) -> click.Choice:  # noqa: N802 - stands for click.Choice
    """click's Choice taking any case (`--format ONNX`): every ptx name is lowercase and unique."""
    return click.Choice(list(choices), case_sensitive=False)


class DeviceChoice(click.Choice):
    """A device name in any case, and where cuda is one, cuda:N: refused in one line when GPU N is
    not on this machine (the CUDA provider's device_id, torch's cuda:N)."""

    def __init__(self, choices):
        super().__init__(list(choices), case_sensitive=False)

    def convert(self, value, param, ctx):
        kind, colon, index = str(value).strip().lower().partition(":")
        if not colon or kind != "cuda" or "cuda" not in self.choices:
            return super().convert(value, param, ctx)
        if not index.isdigit():
            self.fail(f"{value!r}: give cuda or cuda:N, N the GPU's number (cuda:0 is the first)", param, ctx)
        from ptx.machine import missing_gpu

        why = missing_gpu(int(index))
        if why:
            self.fail(why, param, ctx)
        return f"cuda:{int(index)}"

    def get_metavar(self, param, *args, **kwargs):
        return "[" + "|".join(self.choices) + "|cuda:N]"


POSITIVE = FiniteFloat(0.0, open_min=True)
NON_NEGATIVE = FiniteFloat(0.0)
FORCE = click.option("--force", is_flag=True, help="Replace another model's files in the output folder.")
RUN = click.option("--run", "run", type=click.Path(file_okay=False),
                   help="The run folder (default: ROOT/NAME), e.g. the one `ptx train NAME --out DIR` wrote.")


def backend_names() -> list[str]:
    """The backend registry's names, asked for by the commands that take a backend: the registry
    imports neither torch nor onnxruntime, yet ptx.infer and numpy, which `ptx data`, `ptx train
    --help` and the rest of this module's users need not load."""
    from ptx.infer.runtime.backends import list_backends

    return list(list_backends())


def backends_option():
    """--backends (verify, bench)."""
    return click.option(
        "--backends", multiple=True, callback=lambda ctx, param, value: [b.strip() for v in value
                                                                         for b in v.split(",") if b.strip()] or None,
        help="Backends, comma-separated or the option repeated (default: all available): "
             + ", ".join(backend_names())
             + "; a backend means all its precisions, ort-cpu-int8 or openvino-bf16 one of them.")


SECURITY_NOTE = ("A model file is code of a kind: an ONNX file runs no code of its own, a TorchScript file runs "
                 "only its own graph, a pt2 package holds compiled native code, and --module imports and runs "
                 "your Python file. Open only files you trust.")


INPUT_SYNTAX = ("e.g. x=batchx3x224x224:float32. A dim named batch (or N) is the batch; other names are symbolic "
                "sizes.")
BATCH_AXIS_OPTION = click.option("--batch-axis", "batch_axes", multiple=True, metavar="NAME=AXIS|none",
                                 help="Where input NAME's batch is, where ptx reads it wrong (none: it has no batch "
                                      "axis).")
IGNORE_METADATA_OPTION = click.option("--ignore-metadata", is_flag=True,
                                      help="Run the file as your own model even where it carries ptx.* metadata.")


def _options(*options):
    """The option decorators ``options`` as one, in the order they are listed (as when stacked)."""
    return lambda command: functools.reduce(lambda made, option: option(made), reversed(options), command)


# --input, --batch-axis, --ignore-metadata: how ptx reads a user's model file.
model_file_options = _options(
    click.option("--input", "declared_inputs", multiple=True, metavar="NAME=SHAPE[:DTYPE]",
                 help="Declare an input, in forward()'s order, for a TorchScript or pt2 file (they keep no description "
                      "of their inputs): " + INPUT_SYNTAX),
    BATCH_AXIS_OPTION,
    IGNORE_METADATA_OPTION,
)
# --shape, --value, --range, --inputs, --seed: the inputs verify and bench feed.
generated_input_options = _options(
    click.option("--shape", "shapes", multiple=True, metavar="NAME=DIMS",
                 help="Bind a symbolic dim by its name, e.g. seq=5, or input NAME's symbolic sizes, e.g. "
                      "image=1x3x224x224 (the batch axis is still varied)."),
    click.option("--value", "values", multiple=True, metavar="NAME=NUMBER",
                 help="Feed input NAME this fixed value, e.g. sr=16000."),
    click.option("--range", "ranges", multiple=True, metavar="[NAME=]LOW,HIGH",
                 help="Draw every input (or input NAME) from [LOW, HIGH), integers too (default: floats 0,1; "
                      "integers 0-9, or below the rows of the embedding they index where ptx export found it or an ONNX "
                      "graph's Gather shows it; a mask (attention_mask, *_mask) ones then padding per row, "
                      "token_type_ids a run of 0s then of 1s)."),
    click.option("--inputs", "input_files", multiple=True, type=click.Path(dir_okay=False, exists=True),
                 help="Real samples instead of generated ones: .npz (arrays by input name), .npy or .json."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated inputs."),
)


# --min-shape, --max-shape: the sizes a model file's shape certificate tries each dynamic axis at.
shape_certificate_options = _options(
    click.option("--min-shape", "min_shapes", multiple=True, metavar="SYMBOL=SIZE",
                 help="The smallest size of a dynamic axis the model takes (h=32 for a network that downsamples 32 "
                      "times): the shape certificate tries it, the next size and a larger prime instead of 1, 2 and 7."),
    click.option("--max-shape", "max_shapes", multiple=True, metavar="SYMBOL=SIZE",
                 help="The largest size of a dynamic axis you will feed (seq=512): the shape certificate tries it "
                      "beside 1, 2 and 7."),
)


# --min-agreement, --max-kl, --max-kl-p99: what a reduced precision's decoding must hold, per prompt
# (ptx.contract.generation_judge.Bounds; export records them, verify holds each row to them).
_BOUND_HELP = ("a number for every reduced precision, or PRECISION=NUMBER for one (bf16, int8, int4 ...); default: "
               "what the file records, else the precision's (docs/error-model.md)")
decoding_bound_options = _options(
    click.option("--min-agreement", "min_agreement", multiple=True, metavar="[PRECISION=]SHARE",
                 help="A decoder's reduced-precision rows: the share of each prompt's positions (its own and its "
                      f"steps, teacher-forced) whose top token is the reference's, at least; {_BOUND_HELP}."),
    click.option("--max-kl", "max_kl", multiple=True, metavar="[PRECISION=]NATS",
                 help="... and each prompt's mean KL divergence from the reference's distribution, at most; "
                      f"{_BOUND_HELP}."),
    click.option("--max-kl-p99", "max_kl_p99", multiple=True, metavar="[PRECISION=]NATS",
                 help=f"... and its 99th percentile over the prompt's positions, at most; {_BOUND_HELP}."),
)


# The layout of a causal LM's decoder exported with its cache (--module, a transformers folder).
decoder_layout_options = _options(
    click.option("--all-logits", "all_logits", is_flag=True,
                 help="--module or a transformers folder, a causal LM exported with its cache: the decoder computes "
                      "every new position's logits and takes no logits_to_keep (by default a transformers LM's file "
                      "takes it, so that a prompt's run computes its last position's only): the inputs "
                      "onnxruntime-genai, Optimum's ORTModelForCausalLM and openvino-genai feed."),
    click.option("--ort-attention", "ort_attention", is_flag=True,
                 help="--module or a transformers folder, a causal LM exported with its cache: each layer's attention "
                      "as ONNX Runtime's GroupQueryAttention (the operator onnxruntime-genai's builder writes), so "
                      "that ptx keeps the cache in one buffer per layer that the operator writes in place, where the "
                      "file of plain operators copies the whole cache at every step. Only ONNX Runtime opens the "
                      "file (docs/generate.md)."),
    click.option("--static-cache", "static_cache", is_flag=True,
                 help="--module or a transformers folder, a causal LM exported with its cache: the cache is one "
                      "buffer of fixed length per layer's key and value (its past and its present; the run writes "
                      "its new positions at the slots cache_position names, the mask covers the buffer), in plain "
                      "ONNX operators every runtime runs. Its shapes do not grow from step to step, so "
                      "ort-cuda-graph replays each decoding step as one CUDA graph (docs/generate.md)."),
)


def decoding_bounds(min_agreement=(), max_kl=(), max_kl_p99=()) -> dict[str, dict]:
    """decoding_bound_options' values -> {field: {precision or None: value}} (only those given); a bad one
    refused in one line naming its option."""
    from ptx.contract.generation_judge import BOUND_OPTIONS, parse_bound
    from ptx.errors import PtxError

    out = {}
    for name, values in (("min_agreement", min_agreement), ("max_kl", max_kl), ("max_kl_p99", max_kl_p99)):
        if values:
            try:
                out[name] = parse_bound(BOUND_OPTIONS[name], values)
            except PtxError as exc:
                raise click.BadParameter(str(exc), param_hint=f"'{BOUND_OPTIONS[name]}'") from None
    return out


def certificate_sizes(min_shapes=(), max_shapes=()) -> dict[str, dict[str, int]]:
    """--min-shape h=32 and --max-shape seq=512 (repeated) -> {"min_sizes": {symbol: size}, "max_sizes": ...}."""
    out = {}
    for option, texts, key in (("--min-shape", min_shapes, "min_sizes"), ("--max-shape", max_shapes, "max_sizes")):
        sizes = parse_assignments(texts, option)
        bad = next((f"{k}={v}" for k, v in sizes.items() if not v.isdigit() or int(v) < 1), None)
        if bad:
            raise click.UsageError(f"{option} {bad}: give a symbolic dim's name and a size of 1 or more "
                                   f"({'h=32' if option == '--min-shape' else 'seq=512'})")
        out[key] = {k: int(v) for k, v in sizes.items()}
    return out


def open_options(declared_inputs=(), batch_axes=(), ignore_metadata=False) -> dict:
    """What ptx.infer.load takes, from the command line's options."""
    return {"inputs": [parse_declaration(text) for text in declared_inputs],
            "batch_axes": parse_batch_axes(batch_axes), "ignore_metadata": ignore_metadata}


def plan_options(shapes=(), values=(), ranges=()) -> dict:
    """What ptx.contract.tensor_inputs.plan_inputs takes: a bare LOW,HIGH in --range is every input's."""
    overall = [r for r in ranges if "=" not in r]
    if len(overall) > 1:
        raise click.UsageError("--range LOW,HIGH is given twice (NAME=LOW,HIGH ranges one input)")
    return {"shapes": parse_assignments(shapes, "--shape"), "values": parse_assignments(values, "--value"),
            "ranges": parse_assignments([r for r in ranges if "=" in r], "--range"),
            "default_range": overall[0] if overall else None}



def _int_list(ctx, param, value):
    if value is None:  # the command's own default, which depends on the model
        return None
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter("give comma-separated integers, e.g. 1,64,1024") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter("batch sizes must be positive integers")
    return sizes


class ToleranceValue(click.ParamType):
    """--atol/--rtol: a finite number >= 0 for every output, or OUTPUT=NUMBER for one output of a model file."""

    name = "[OUTPUT=]NUMBER"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        output, sep, number = str(value).rpartition("=")
        if sep and not output.strip():
            self.fail(f"{value!r}: write NUMBER, or OUTPUT=NUMBER for one output", param, ctx)
        return (output.strip() or None), NON_NEGATIVE.convert(number, param, ctx)


TOLERANCE = ToleranceValue()
REFERENCE_TENSORS = "keeps a model file's reference tensors; a run's reference is its checkpoint, run by eager"
# The options that mean something for one kind of model only, said once for every command: the kind
# ("run": a tutorial model's run, found by name or folder; "file": a model file, a tutorial model's
# export or your own; "samples": a model whose head names a dataset, whose real test samples it
# judges on) and why it means nothing for the others. Every other option means the same for all.
ONE_KIND = {
    "all_models": ("run", "verifies every run under --root; a model file is one model"),
    "root": ("run", "says where runs live; a model file is found by its path"),
    "run": ("run", "names a run folder; a model file is found by its path"),
    "samples": ("samples", "counts real test samples, which only a tutorial model's contract names (a dataset): give "
                           "--inputs FILE for samples of your own"),
    "declared_inputs": ("file", "declares a model file's inputs; a tutorial model's contract declares its own"),
    "batch_axes": ("file", "says where a model file's batch is; a tutorial model's contract says so itself"),
    "ignore_metadata": ("file", "reads a model file as your own; a tutorial model's run is read by its contract"),
    "reference_file": ("file", REFERENCE_TENSORS),
    "save_reference": ("file", REFERENCE_TENSORS),
    "min_shapes": ("file", "sizes a model file's shape certificate; a tutorial model's axes are its contract's"),
    "max_shapes": ("file", "sizes a model file's shape certificate; a tutorial model's axes are its contract's"),
}


# The options that make generated inputs, which --inputs replaces.
GENERATING = ("seed", "shapes", "values", "ranges")


def kinds_of(target) -> set[str]:
    """The ONE_KIND kinds a Target (ptx.infer.model.target) is, or "run": a run named, before it is looked for."""
    if target == "run" or target.is_run:
        return {"run", "samples"}
    return {"file", "samples"} if target.found.has_contract and target.found.metadata.get("dataset") else {"file"}


def refuse_meaningless(ctx: click.Context, target) -> None:
    """One line for an option given for a model it means nothing for (ONE_KIND says which and why)."""
    kinds = kinds_of(target)
    for name, (kind, why) in ONE_KIND.items():
        if kind not in kinds:
            refuse_given(ctx, [name], why)
    # for a command that reaches a served model (served_options: --json-data is theirs alone; ptx serve's
    # own --token and --insecure are its server's); refuse_meaningless is asked of a local model only
    if any(p.name == "json_data" for p in ctx.command.params):
        refuse_given(ctx, SERVED, "is for a served model: give its URL (http://HOST:PORT/v2/models/NAME)")
    given = _given(ctx, GENERATING)
    if given and _given(ctx, ["input_files"]):  # the inputs are the file's: nothing is generated to seed or shape
        raise click.UsageError(f"--inputs feeds your own samples; {given[0]} is for generated ones: give one of them")


class TargetedCommand(click.Command):
    """A command that takes a tutorial model NAME or a model FILE: its --help given after one
    (`ptx verify model.onnx --help`) lists only the options that apply to that kind (ONE_KIND), each
    with the default it gets there (``help_defaults``: an option whose default depends on the model,
    {name: (a run's, a file's)}); plain --help lists every option, with a run's. Parsing is
    untouched: an option of the other kind is still refused in one line (refuse_meaningless)."""

    def __init__(self, *args, help_defaults: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.help_defaults = dict(help_defaults or {})

    def parse_args(self, ctx, args):
        if {"--help", "-h"} & set(args):  # --help is eager: it runs before NAME is parsed
            ctx.meta["ptx.target"] = _target_kind(args)
        return super().parse_args(ctx, args)

    def format_options(self, ctx, formatter):
        kind = ctx.meta.get("ptx.target")
        kinds = {"file", "samples"} if kind == "file" else kinds_of("run") if kind else None
        records = []
        for param in self.get_params(ctx):
            if kinds is not None and param.name in ONE_KIND and ONE_KIND[param.name][0] not in kinds:
                continue
            if param.name in self.help_defaults:
                param = copy.copy(param)  # the help's copy: the parsed option keeps its own default
                param.default, param.show_default = self.help_defaults[param.name][kind == "file"], True
            record = param.get_help_record(ctx)
            if record is not None:
                records.append(record)
        what = "Options" if kinds is None else \
            f"Options for {'a model file' if kind == 'file' else 'a tutorial model'} (`{ctx.command_path} --help` lists every option)"
        with formatter.section(what):
            formatter.write_dl(records)


def _target_kind(args) -> str | None:
    """"file" where the command line names a model file, "tutorial" where it names a registered
    model, else None (the full help)."""
    from ptx.files import is_file

    if any(is_file(a) for a in args if not a.startswith("-")):
        return "file"
    from ptx.contract.catalog import names

    return "tutorial" if set(args) & set(names()) else None


def _given(ctx: click.Context, names) -> list[str]:
    """The options among ``names`` that the command line set (not left at their default), by their long names."""
    from click.core import ParameterSource

    params = {p.name: p for p in ctx.command.params}
    return [max(params[n].opts, key=len) for n in names if n in params
            and ctx.get_parameter_source(n) not in (None, ParameterSource.DEFAULT)]


def refuse_given(ctx: click.Context, names, why: str) -> None:
    """One line for the first option among ``names`` that the command line set: "--OPTION why"."""
    given = _given(ctx, names)
    if given:
        raise click.UsageError(f"{given[0]} {why}")


SERVED = ("token", "headers", "timeout", "concurrency", "max_batch", "ca_file", "insecure", "json_data")


# How `ptx verify URL` and `ptx bench URL` reach a served model (ptx.infer.runtime.oip_transport.Connection).
served_options = _options(
    click.option("--token", envvar="PTX_TOKEN", help="A served model: the bearer token its server wants "
                 "(sent as Authorization: Bearer TOKEN; or $PTX_TOKEN)."),
    click.option("--header", "headers", multiple=True, metavar="NAME:VALUE",
                 help="A served model: a header sent with every request (X-Api-Key:abc); repeatable."),
    click.option("--timeout", type=click.FloatRange(min=0.01), default=30.0, show_default=True,
                 help="A served model: seconds one request may take (a draining server's 503s are retried "
                      "within it)."),
    click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True,
                 help="A served model: requests in flight at once."),
    click.option("--max-batch", type=click.IntRange(min=1), default=None,
                 help="A served model: the largest batch one request carries (default: the server's "
                      "max_batch_size, where its model config gives one)."),
    click.option("--ca-file", type=click.Path(dir_okay=False, exists=True),
                 help="A served model over TLS: the CA certificate its certificate is checked against."),
    click.option("--insecure", is_flag=True, help="A served model over https: skip the certificate check."),
    click.option("--json-data", is_flag=True,
                 help="A served model over REST: send tensors as JSON numbers always (by default: as binary data "
                      "where the server lists the binary_tensor_data extension in GET /v2, else JSON)."),
)


def is_url(name) -> bool:
    """Whether a command's NAME is a served model's URL (http(s)://, grpc://)."""
    from ptx.errors import PtxError
    from ptx.infer.runtime.oip_transport import URL_SCHEMES, is_url as names_url

    if isinstance(name, str) and "://" in name and not names_url(name):  # a URL, of a scheme no server speaks here
        raise PtxError(f"{name}: a served model's URL is {', '.join(s + '...' for s in URL_SCHEMES)} "
                       "(http://HOST:PORT/v2/models/NAME or grpc://HOST:PORT/NAME)")
    return names_url(name)
