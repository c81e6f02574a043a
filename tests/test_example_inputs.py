"""Example inputs a user trusts (issue 58): generated inputs shaped as a tokenizer makes them (a mask
of ones then padding, token types in runs, ids below the rows of the embedding they feed), export's
--inputs/--shape/--value/--range as verify's, the factory's example used to validate, each export
saying what its inputs were; and --shape binding a symbolic dim by its name, as the hint says."""
from __future__ import annotations

import numpy as np
import pytest

from ptx.contract.reference import load_reference
from ptx.contract.tensor_inputs import describe_inputs, make_feeds, plan_inputs
from ptx.contract.tensors import Signature, TensorSig
from ptx.errors import PtxError
from ptx.export import export_module
from ptx.infer import load
from ptx_command import ptx

TEXT = Signature((TensorSig("input_ids", "int64", ("batch", "seq"), 0),
                  TensorSig("attention_mask", "int64", ("batch", "seq"), 0),
                  TensorSig("token_type_ids", "int64", ("batch", "seq"), 0),
                  TensorSig("pixel_mask", "int64", ("batch", "seq"), 0)), ())


def test_masks_are_ones_then_padding_and_token_types_runs_in_every_row():
    plan = plan_inputs(TEXT, shapes={"seq": "13"})
    feeds = make_feeds(TEXT, plan, 64, seed=3)
    for name in ("attention_mask", "pixel_mask"):
        mask = feeds[name]
        assert mask.shape == (64, 13) and mask.dtype == np.int64 and set(np.unique(mask)) <= {0, 1}
        assert (mask[:, 0] == 1).all()  # no row is masked whole
        assert (np.diff(mask, axis=1) <= 0).all()  # ones, then padding: never a 1 after a 0
        assert len({int(r.sum()) for r in mask}) > 3  # rows of several lengths, as a padded batch has
    types = feeds["token_type_ids"]
    assert (types[:, 0] == 0).all() and (np.diff(types, axis=1) >= 0).all() and types.max() == 1
    assert "attention_mask ones then padding per row" in describe_inputs(TEXT, plan)
    assert "token_type_ids a run of 0s then of 1s per row" in describe_inputs(TEXT, plan)
    # a range the user gives for a mask is theirs: drawn from it, not shaped
    ranged = make_feeds(TEXT, plan_inputs(TEXT, ranges={"attention_mask": "0,2"}), 64, seed=3)["attention_mask"]
    assert (np.diff(ranged, axis=1) > 0).any()


def test_ids_stay_below_the_rows_of_the_embedding_the_caller_found():
    plan = plan_inputs(TEXT)
    plan.limits = {"input_ids": (5, "rows of the embedding wte")}
    ids = make_feeds(TEXT, plan, 64, seed=0)["input_ids"]
    assert ids.min() >= 0 and ids.max() == 4
    assert "input_ids int64 in [0, 5) (rows of the embedding wte)" in describe_inputs(TEXT, plan)
    plan = plan_inputs(TEXT, ranges={"input_ids": "2:4"})  # LO:HI as LO,HI; the user's range wins
    plan.limits = {"input_ids": (5, "rows of the embedding wte")}
    assert set(np.unique(make_feeds(TEXT, plan, 64, seed=0)["input_ids"])) == {2, 3}


def test_shape_binds_a_symbol_by_its_name_and_the_hint_says_a_form_that_works():
    plan = plan_inputs(TEXT)
    hint = plan.describe_choices()
    assert hint == "symbolic dims chosen by ptx: seq=8 (bind them with --shape SYMBOL=SIZE, e.g. --shape seq=8)"
    suggested = hint.split("e.g. --shape ")[1].rstrip(")")
    name, size = suggested.split("=")
    assert plan_inputs(TEXT, shapes={name: size}).bound == {"seq": 8}
    assert plan_inputs(TEXT, shapes={"seq": "5"}).bound == {"seq": 5} and not plan_inputs(TEXT, shapes={"seq": "5"}).chosen
    # an input's whole shape, its batch written as the symbol verify varies
    assert plan_inputs(TEXT, shapes={"input_ids": "batchx5"}).bound == {"seq": 5}
    with pytest.raises(PtxError, match="batch is the batch, which verify varies itself"):
        plan_inputs(TEXT, shapes={"batch": "4"})
    with pytest.raises(PtxError, match="give the size of seq, a whole number of 1 or more"):
        plan_inputs(TEXT, shapes={"seq": "0"})
    with pytest.raises(PtxError, match="no input 'tokens' and no symbolic dim of that name; its symbolic dims are seq"):
        plan_inputs(TEXT, shapes={"tokens": "4"})


def _text_graph(path, rows: int | None = None):
    """An ONNX file of a user's own (no ptx metadata): input_ids [batch, seq] and attention_mask, the
    ids looked up in a table of ``rows`` rows through a Cast and an Unsqueeze (or, without rows, cast
    to floats), pooled under the mask."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = [numpy_helper.from_array(np.array([2], np.int64), "last")]
    if rows:
        weights.append(numpy_helper.from_array(np.arange(rows * 4, dtype=np.float32).reshape(rows, 4), "table"))
        nodes = [helper.make_node("Cast", ["input_ids"], ["ids32"], to=TensorProto.INT32),
                 helper.make_node("Unsqueeze", ["ids32", "last"], ["ids3"]),
                 helper.make_node("Gather", ["table", "ids3"], ["looked4"], name="embed"),
                 helper.make_node("ReduceSum", ["looked4", "last"], ["looked"], keepdims=0)]
    else:
        nodes = [helper.make_node("Cast", ["input_ids"], ["looked"], to=TensorProto.FLOAT)]
    nodes += [helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
              helper.make_node("Unsqueeze", ["mask", "last"], ["mask3"]) if rows else
              helper.make_node("Identity", ["mask"], ["mask3"]),
              helper.make_node("Mul", ["looked", "mask3"], ["kept"]),
              helper.make_node("ReduceSum", ["kept", "axis1"], ["y"], keepdims=0)]
    weights.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("input_ids", "attention_mask")]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4] if rows else ["batch"])
    model = helper.make_model(helper.make_graph(nodes, "text", ids, [out], weights), ir_version=8,
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def test_verify_says_what_it_generated_as_export_does(tmp_path):
    """verify's cases line said "generated, seed 0, batch 3 and batch 5" and nothing of what was fed;
    it says each input as export's 'validation inputs' line does (describe_inputs)."""
    result = ptx("verify", _text_graph(tmp_path / "text.onnx"), "--backends", "ort-cpu")
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("cases: generated, seed 0, batch 3 and batch 5: input_ids int64 in [0, 10), attention_mask ones then "
            "padding per row; symbolic dims chosen by ptx: seq=8") in result.stdout, result.stdout


def test_ids_of_a_file_without_ptx_metadata_stay_within_the_rows_of_the_graphs_gather(tmp_path):
    """A GPT-2 of 5 ids, its ptx metadata stripped, failed verify on id 8 ("idx=8 must be within the
    inclusive range [-5,4]"): an integer input that indexes a Gather of an initializer (here through a
    Cast and an Unsqueeze) takes ids below its rows, said as export says it."""
    path = _text_graph(tmp_path / "five.onnx", rows=5)
    assert load(path).signature.input("input_ids").value_range == (0, 4)
    assert load(path).signature.input("attention_mask").value_range is None  # it indexes no table
    result = ptx("verify", path, "--backends", "ort-cpu")
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("cases: generated, seed 0, batch 3 and batch 5: input_ids int64 in [0, 4] (rows of the graph's Gather "
            "embed), attention_mask ones then padding per row") in result.stdout, result.stdout


# The module as a user's file holds it: the tests run it in process and through --module.
TAGGER = """
import torch
from torch import nn


class Tagger(nn.Module):
    \"\"\"Token ids into a vocabulary of 6, a mask that pools: ids of 6 or more are an index error.\"\"\"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(6, 8)
        self.types = nn.Embedding(2, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.embed(input_ids) + self.types(token_type_ids)
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return self.out((hidden * weights).sum(1) / weights.sum(1))


def plain():
    return Tagger()


def with_example():
    ids = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    return Tagger(), (ids, (ids > 0).long(), torch.zeros_like(ids))
"""


def _tagger():
    namespace: dict = {}
    exec(compile(TAGGER, "tagger.py", "exec"), namespace)  # noqa: S102 - the test's own module source
    return namespace["Tagger"]()


DECLARED = ["input_ids=batchxseq:int64", "attention_mask=batchxseq:int64", "token_type_ids=batchxseq:int64"]


def test_export_generates_ids_the_embedding_takes_and_says_what_it_fed(tmp_path):
    lines = []
    export_module(_tagger(), None, tmp_path / "t", inputs=DECLARED, formats=["torchscript"],
                  log=lines.append)
    said = next(ln for ln in lines if ln.startswith("validation inputs: "))
    assert said == ("validation inputs: generated: input_ids int64 in [0, 5] (rows of the embedding embed), "
                    "attention_mask ones then padding per row, token_type_ids a run of 0s then of 1s per row"), said
    reference = load_reference(tmp_path / "t" / "model.reference.npz")
    # the embedding's rows are a fact of the model, recorded in its signature: verify's inputs keep to it too
    assert reference.signature.input("input_ids").value_range == (0, 5)
    for case in reference.cases:
        assert case.feeds["input_ids"].max() < 6 and (case.feeds["attention_mask"][:, 0] == 1).all()
    # an id past the table is one line naming the input and the range, through every file (before: a pt2
    # printed AOTInductor's page of C++ frames, ONNX Runtime its Gather error, TorchScript "index out of range")
    ids = np.array([[1, 2, 9]], np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    with pytest.raises(PtxError, match=r"input 'input_ids' of .* holds 9; the model takes values in \[0, 5\] \(ids "
                                       r"into a table of 6 rows\)"):
        load(tmp_path / "t" / "model.torchscript.pt").run(feeds)
        assert case.feeds["token_type_ids"].max() <= 1


def test_export_validates_on_the_users_inputs_or_the_factorys_example_and_says_which(tmp_path):
    (tmp_path / "tagger.py").write_text(TAGGER)
    ids = np.array([[1, 2, 3, 0, 0], [4, 5, 1, 2, 3], [1, 0, 0, 0, 0]], np.int64)
    np.savez(tmp_path / "mine.npz", input_ids=ids, attention_mask=(ids > 0).astype(np.int64),
             token_type_ids=np.zeros_like(ids))
    declared = [a for d in DECLARED for a in ("--input", d)]
    given = ptx("export", "--module", "tagger.py:plain", *declared, "--inputs", "mine.npz", "--format",
                "torchscript", "--out", "a", cwd=tmp_path)
    assert given.returncode == 0, given.stderr
    assert "validation inputs: from mine.npz (1 cases)" in given.stdout, given.stdout
    kept = load_reference(tmp_path / "a" / "model.reference.npz").cases
    assert len(kept) == 1 and np.array_equal(kept[0].feeds["input_ids"], ids)
    example = ptx("export", "--module", "tagger.py:with_example", "--format", "torchscript", "--out", "b",
                  cwd=tmp_path)
    assert example.returncode == 0, example.stderr
    assert "; and the factory's example" in example.stdout, example.stdout
    shaped = ptx("export", "--module", "tagger.py:with_example", "--value", "token_type_ids=1", "--format",
                 "torchscript", "--out", "c", cwd=tmp_path)
    assert shaped.returncode == 0, shaped.stderr
    line = next(ln for ln in shaped.stdout.splitlines() if ln.startswith("validation inputs: "))
    assert "token_type_ids = 1" in line and "factory's example" not in line, line  # the user's shaping decides
    both = ptx("export", "--module", "tagger.py:plain", *declared, "--inputs", "mine.npz", "--range", "0,3",
               "--out", "d", cwd=tmp_path)
    assert both.returncode == 2 and "--inputs validates on your own samples; --shape, --value and --range" \
        in both.stderr, both.stderr
    tutorial = ptx("export", "convnet", "--value", "x=1", cwd=tmp_path)
    assert tutorial.returncode == 2 and "--value means nothing for a tutorial model NAME" in tutorial.stderr



def test_a_small_vocabulary_model_s_cache_is_left_out_as_a_large_one_s(tmp_path):
    """Generated ids past a vocabulary of 8 made the module's probe fail, so its ModelOutput was not
    unwrapped and export refused its cache ("returned Out"); the probe is run again on ids the
    embedding takes, and the cache is left out as for any other model."""
    import dataclasses

    import torch

    class TinyCache:
        pass

    @dataclasses.dataclass
    class Out:
        logits: torch.Tensor
        cache: object = None

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.head = torch.nn.Embedding(8, 4), torch.nn.Linear(4, 3)

        def forward(self, input_ids):
            return Out(self.head(self.embed(input_ids)), TinyCache())

    lines = []
    done = export_module(Tiny(), None, tmp_path / "tiny", inputs=["input_ids=batchxseq:int64"],
                         formats=["onnx"], log=lines.append)
    assert "outputs: cache (a TinyCache) left out: ptx exports tensors, not a cache; build the model with " \
           "use_cache=False to skip computing it" in lines, lines
    assert done.signature.output_names == ["logits"]
    assert done.signature.input("input_ids").value_range == (0, 7)


GPT = """
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel


class Gpt(nn.Module):
    # GPT-2 from a tiny config, taking (input_ids, attention_mask) and giving the logits

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.gpt = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                              bos_token_id=0, eos_token_id=0))

    def forward(self, input_ids, attention_mask):
        return self.gpt(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def build():
    return Gpt().eval()
"""


def test_gpt2_with_an_attention_mask_validates_on_masks_a_tokenizer_makes(tmp_path):
    """Issue 58 item 3: random 0/1 masks left whole query rows masked and export failed at max abs
    0.476; with masks of ones then padding and ids below wte's 40 rows the ONNX file validates, its
    certificate holds, and it says what it was fed."""
    pytest.importorskip("transformers")
    (tmp_path / "gpt.py").write_text(GPT)
    result = ptx("export", "--module", "gpt.py:build", "--input", "input_ids=batchxseq:int64", "--input",
                 "attention_mask=batchxseq:int64", "--format", "onnx", "--out", "g", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert ("validation inputs: generated: input_ids int64 in [0, 39] (rows of the embedding gpt.transformer.wte), "
            "attention_mask ones then padding per row") in result.stdout, result.stdout
    assert "shape certificate: holds: batch 1, 2, 7; seq 1, 2, 7 (answers against eager)" in result.stdout


def test_random_masks_that_fail_everywhere_are_not_blamed_on_an_axis_the_export_fixed(tmp_path):
    """--range attention_mask=0,2 brings the random 0/1 masks back: the ONNX file disagrees with eager
    at the cases' own sizes, and the certificate's axes only change the answers. The error said the
    module 'turns that size into a constant (a view or reshape with a number)', which it does not."""
    pytest.importorskip("transformers")
    (tmp_path / "gpt.py").write_text(GPT)
    result = ptx("export", "--module", "gpt.py:build", "--input", "input_ids=batchxseq:int64", "--input",
                 "attention_mask=batchxseq:int64", "--format", "onnx", "--out", "g", "--range", "attention_mask=0,2",
                 cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "validation inputs: generated: input_ids int64 in [0, 39] (rows of the embedding gpt.transformer.wte), " \
           "attention_mask int64 in [0, 2)" in result.stdout, result.stdout
    error = result.stderr.strip().splitlines()[-1]
    assert "CHANGES THE ANSWERS" in error and "turns that size into a constant" not in error, error
    assert error.endswith("so no axis is to blame: look at what the model was fed (the 'validation inputs' line; "
                          "--inputs takes real samples)"), error


def test_ids_are_bounded_by_the_table_they_index_not_by_a_module_that_reads_their_shape(tmp_path):
    # BART's learned positions take the decoder's ids for their shape only, and its scaled word
    # embedding looks the ids up through its parent's forward: decoder ids were cut below the 66 rows of
    # embed_positions, where the 100 rows of embed_tokens bound them
    import torch
    from torch import nn

    class LearnedPositions(nn.Embedding):
        def forward(self, ids):
            return super().forward(torch.arange(ids.shape[1]).unsqueeze(0))

    class Scaled(nn.Embedding):
        def forward(self, ids):
            return super().forward(ids) * 2.0

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens, self.embed_positions = Scaled(100, 4), LearnedPositions(66, 4)

        def forward(self, decoder_input_ids):
            return self.embed_tokens(decoder_input_ids) + self.embed_positions(decoder_input_ids)

    lines = []
    export_module(Decoder(), None, tmp_path / "d", inputs=["decoder_input_ids=batchxseq:int64"],
                  formats=["onnx"], log=lines.append)
    said = next(ln for ln in lines if ln.startswith("validation inputs: "))
    assert said == "validation inputs: generated: decoder_input_ids int64 in [0, 99] (rows of the embedding " \
                   "embed_tokens)", said


def test_ids_looked_up_by_torch_embedding_directly_are_bounded_too(tmp_path):
    # a table read with torch.embedding (as some libraries' own embeddings do), not through nn.Embedding
    import torch
    from torch import nn

    class Direct(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Parameter(torch.randn(12, 4))

        def forward(self, ids):
            return torch.embedding(self.table, ids)

    lines = []
    export_module(Direct(), None, tmp_path / "d", inputs=["ids=batchxseq:int64"], formats=["onnx"],
                  log=lines.append)
    said = next(ln for ln in lines if ln.startswith("validation inputs: "))
    assert said == "validation inputs: generated: ids int64 in [0, 11] (rows of the embedding table)", said
