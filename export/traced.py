"""A user's module as the exporters will trace it and as its eager reference answers (export_module's
first half, export/module.py): its inputs' signature and examples as the module takes them (a
transformers model as it comes: keyword inputs, a ModelOutput's tensors out), the sizes and id ranges
it was found to take, eager PyTorch's answers through ``ptx.infer.load(module)``, and the shape
certificate's probes with eager's answers on them (a size eager refuses is the model's bound).

Every eager run may change the module on its way (transformers' Swin shrinks a window to a small image,
and keeps it): its attributes are put back after each, and before the exporters trace it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

import torch

from ptx.contract.shape_certificate import probes as certificate_probes
from ptx.contract.structure import OutputStructure
from ptx.contract.tensor_inputs import InputPlan, plan_inputs
from ptx.contract.tensors import Signature, TensorSig
from ptx.errors import PtxError
from ptx.infer.model.target import load

from .as_it_comes import keyword_inputs, output_structure, tensor_outputs
from .certificate import attributes_restorer, eager_bounds
from .detections import FlatDetections, with_detections
from .examples import example_signature, generated_examples, named_outputs, probe
from .pipeline import Shapes
from .sizes import search_sizes


@dataclass
class Traced:
    """A module as the exporters will trace it, and what running it on its example found: ``given`` as the
    user made it, ``module`` with keyword inputs and tensor outputs; ``out`` eager's answer on ``probed``
    (None where it refused them); ``base`` the plan every generated input follows; ``restore`` puts back
    the attributes an eager run changed."""

    given: torch.nn.Module
    module: torch.nn.Module
    answered_as_is: torch.nn.Module  # the module ``out`` came from (before tensor_outputs wrapped it)
    sigs: tuple[TensorSig, ...]
    args: tuple
    out: object
    probed: tuple
    base: InputPlan
    restore: Callable[[], None]
    structure: OutputStructure | None


def trace(module: torch.nn.Module, example_inputs, given) -> Traced:
    """The module as it comes (a transformers model: inputs by forward()'s keyword, a ModelOutput's tensors
    out), its inputs' signature and examples, and eager's answer on them (``given``: export_module's options)."""
    log, plan, min_sizes = given.log, given.plan, given.min_sizes
    user = module
    module, example_inputs = keyword_inputs(module, example_inputs, given.inputs, log)
    # Every eager run below may change the module on its way (transformers' Swin shrinks a window to a
    # small image, and keeps it): its attributes are put back after each, and before the exporters trace it.
    restore = attributes_restorer(module)
    sigs, args = example_signature(module, example_inputs, given.inputs, given.input_names, given.dynamic, log,
                                   plan_of=lambda declared: input_plan(declared, plan, min_sizes))
    out, limits = probe(module, sigs, args, named=user)
    probed = args  # the inputs ``out`` answers
    restore()
    base = input_plan(sigs, plan, min_sizes)
    base.limits = {n: v for n, v in limits.items() if n not in base.ranges and n not in base.values}
    if limits:  # a fact of the model, recorded in its signature: every generator (verify's too) keeps to it
        sigs = tuple(replace(t, value_range=(0, limits[t.name][0] - 1)) if t.name in limits and t.value_range is None
                     else t for t in sigs)
        if example_inputs is None:  # made from the declarations: again, with ids the embedding takes
            args = generated_examples(sigs, base)  # the same plan: each input's recorded range now bounds its ids
            if out is None:  # generated ids past a small vocabulary's rows: its answer, on ids it takes
                out, _ = probe(module, sigs, args, named=user)
                probed = args
                restore()
    # A size ptx chose that the model refuses (Wav2Vec2's 10-sample kernel): the first larger one it takes, for
    # the generated examples, or beside the factory's own (the eager reference and the cases are generated too).
    if example_inputs is None and out is None and search_sizes(module, sigs, base, log, type(user).__name__):
        args = generated_examples(sigs, base)
        out, _ = probe(module, sigs, args, named=user)
        probed = args
        restore()
    elif example_inputs is not None and base.chosen and out is not None:
        search_sizes(module, sigs, base, log, type(user).__name__, example=args)
    wrapped = tensor_outputs(module, sigs, out, log)
    # recorded in the files, so that load() can give it back (Model.nest); detections record their own
    structure = None if isinstance(wrapped, FlatDetections) else output_structure(out)
    return Traced(user, wrapped, module, sigs, args, out, probed, base, restore, structure)


def eager_reference(traced: Traced, given):
    """The eager reference, as ptx.infer.load(module) gives it: its outputs learned by two runs, made as the
    validation cases are, whose answers it keeps for them: each run meets the module as the user made it."""
    module, restore, sigs = traced.module, traced.restore, traced.sigs
    putting_back = _after_each_call(module, restore)
    try:
        eager = load(module, inputs=list(sigs), plan=traced.base)
    except PtxError:  # said as the axis the module fixes where that is why (eager_bounds raises it), else as it came
        putting_back()
        restore()
        eager_bounds(module, Signature(sigs, ()), _probes(traced, given), traced.args, restore)
        raise
    finally:
        putting_back()
        restore()
    eager.run = _restoring(eager.run, restore)  # every run below, the validation cases' too, puts it back
    if traced.out is not None and traced.args is traced.probed and module is traced.answered_as_is:
        # the run that found the limits answers its inputs: the example's, or the generated ones (the
        # certificate's batch-2 probe, made as they are)
        eager.runner.remember({t.name: a.numpy() for t, a in zip(sigs, traced.args)}, traced.out)
    return eager


def _probes(traced: Traced, given):
    """The shape certificate's probes of the module's inputs (the user's --max-shape, --min-shape, seed)."""
    return certificate_probes(Signature(traced.sigs, ()), traced.base, max_sizes=given.max_sizes, seed=given.seed,
                              min_sizes=given.min_sizes)


def certified(traced: Traced, eager, given) -> tuple[Shapes, Signature, OutputStructure | None]:
    """(the shape certificate's probes and eager's answers on them, the files' signature, the output structure
    by its names): a size eager refuses is the model's bound (eager_bounds), not probed."""
    sigs, module = traced.sigs, traced.module
    probes = _probes(traced, given)
    sizes_of_example = Signature(sigs, ()).symbol_sizes({t.name: a for t, a in zip(sigs, traced.args)})
    answers = [_answer(eager, p) for p in probes]
    bounds = {}
    if any(isinstance(a, PtxError) for a in answers):  # the model's own bound, or an axis forward fixes (raised)
        bounds = eager_bounds(module, Signature(sigs, ()), probes, traced.args, traced.restore)
        if not bounds:
            first = next(a for a in answers if isinstance(a, PtxError))
            if bounds is None:  # it refuses every size tried and the example's too: the sizes are not ones it takes
                at = ", ".join(f"{s}={n}" for s, n in sizes_of_example.items())
                raise PtxError(f"{type(traced.given).__name__} refuses every size tried, and the example's ({at}) too "
                               f"({first}): give sizes it takes with --shape SYMBOL=SIZE (the image size or length it "
                               "was configured for), --min-shape where it takes only larger ones, or return example "
                               "inputs from FACTORY")
            raise first
    probes = [p for p, a in zip(probes, answers) if not isinstance(a, PtxError)]  # eager's refusals are not probed
    signature = with_detections(Signature(sigs, named_outputs(eager.signature.outputs, given.output_names)), module)
    structure = _renamed(traced.structure, eager.signature, signature)
    # eager's answers by --output's names
    wants = [dict(zip(signature.output_names, a.values())) for a in answers if not isinstance(a, PtxError)]
    return Shapes(probes, wants, sizes_of_example, bounds), signature, structure


def _renamed(structure: OutputStructure | None, eager: Signature, signature: Signature) -> OutputStructure | None:
    """The structure of the module's answer with the file's output names (--output renames them in
    order), or None where its leaves are not the outputs eager was seen to return."""
    if structure is None or structure.names() != eager.output_names:
        return None
    return structure.renamed(dict(zip(eager.output_names, signature.output_names)))


def input_plan(sigs: Sequence[TensorSig], plan: Mapping | None, min_sizes: Mapping[str, int] | None):
    """How every input export makes is shaped: the user's --shape, --value and --range (``plan``), and
    a symbol ptx sizes itself at its --min-shape at least (a model that takes no shorter input)."""
    base = plan_inputs(Signature(tuple(sigs), ()), **dict(plan or {}))
    for symbol, size in (min_sizes or {}).items():
        if symbol in base.chosen:
            base.chosen[symbol] = max(base.chosen[symbol], size)
    return base


def _restoring(run, restore):
    """``run`` (eager's) with the module's attributes put back after every call, an answer or a refusal
    (``restore``: certificate.attributes_restorer): each case and probe, and the exporters' trace after
    them, meet the module as the user made it (a module that counts its calls answered the second
    validation case from the first's count, and the exported file was refused for the difference)."""
    def run_then_restore(*args, **kwargs):
        try:
            return run(*args, **kwargs)
        finally:
            restore()
    return run_then_restore


def _after_each_call(module, restore):
    """``restore`` called after each call of ``module`` until the function returned is called. A scripted
    module (torch.jit.script) takes no forward hook, and its attributes live in TorchScript, out of
    restore's reach: it is run as it is (export took it so before the hook)."""
    try:
        handle = module.register_forward_hook(lambda *_: restore())
    except RuntimeError:  # "register_forward_hook is not supported on ScriptModules"
        return lambda: None
    return handle.remove


def _answer(eager, probe) -> dict | PtxError:
    """Eager's outputs on one of the certificate's probes, or its refusal of the size."""
    try:
        return eager.run(dict(probe.feeds))
    except PtxError as exc:
        return exc
