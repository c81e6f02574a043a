"""scripts/train_small_lm.py, the trained LM quantization is judged on, in miniature (its real run takes half an hour
and is never made here): the held-out split by file, the schedule a timed run is repeated by, a run repeated by its
seed, and the folder as a snapshot holds one (shards, eos, ChatML)."""
from __future__ import annotations

import json

import pytest
from repo_scripts import script

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

TEXT = ['def add(a, b):\n    """Return the sum of a and b."""\n    return a + b\n',
        "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n"
        "        self.items.append(item)\n", "# The café's menü, 日本語 and 👋 read as bytes.\nimport os\n"] * 3


SCRIPT = script("train_small_lm")


def test_the_held_out_files_are_whole_files_chosen_by_their_path_alone(tmp_path):
    for number in range(200):
        (tmp_path / "pkg" / f"m{number}.py").parent.mkdir(exist_ok=True)
        (tmp_path / "pkg" / f"m{number}.py").write_text("x = 1\n")
    (tmp_path / "site-packages").mkdir()
    (tmp_path / "site-packages" / "other.py").write_text("y = 2\n")
    training, held = SCRIPT.corpus_files(tmp_path, 0.1)
    assert not set(training) & set(held) and len(training) + len(held) == 200  # site-packages left out
    assert 5 <= len(held) <= 40
    (tmp_path / "pkg" / "m0.py").unlink()  # another file gone: the others stay on their side
    assert set(SCRIPT.corpus_files(tmp_path, 0.1)[1]) == set(held) - {tmp_path / "pkg" / "m0.py"}


def test_the_warmup_does_not_depend_on_the_total_so_steps_repeat_a_timed_run():
    peak = 1e-3
    assert [SCRIPT.learning_rate(s, 10, 100, peak) for s in range(10)] == \
           [SCRIPT.learning_rate(s, 10, 10 ** 9, peak) for s in range(10)]
    assert SCRIPT.learning_rate(10, 10, 100, peak) == pytest.approx(peak)
    assert SCRIPT.learning_rate(100, 10, 100, peak) == pytest.approx(peak / 10)
    assert SCRIPT.learning_rate(50, 10, 100, peak) != SCRIPT.learning_rate(50, 10, 200, peak)


def _run(tmp_path, seed: int, words, stream):
    args = SCRIPT.arguments([str(tmp_path), "--hidden", "128", "--layers", "1", "--steps", "3", "--warmup", "2",
                             "--length", "16", "--batch", "2", "--seed", str(seed), "--every", "1000"])
    torch.manual_seed(seed)
    model = SCRIPT.build_model(args, words, seed)
    SCRIPT.train(model, stream, args)
    return model


def test_a_run_is_repeated_by_its_seed_and_written_as_a_snapshot(tmp_path, capsys):
    words = SCRIPT.train_tokenizer(TEXT, 300)
    assert words.decode(words(TEXT[2]).input_ids) == TEXT[2]
    stream = SCRIPT.token_stream(words, TEXT)
    first, again, other = (_run(tmp_path, seed, words, stream) for seed in (0, 0, 1))
    assert "step 3/3" in capsys.readouterr().out
    weights = first.model.layers[0].mlp.up_proj.weight
    assert torch.equal(weights, again.model.layers[0].mlp.up_proj.weight)
    assert not torch.equal(weights, other.model.layers[0].mlp.up_proj.weight)

    files = SCRIPT.save(first, words, tmp_path, 3)
    assert 2 <= len(files) <= 4, files
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(files)
    end = words.convert_tokens_to_ids("<|im_end|>")
    assert json.loads((tmp_path / "generation_config.json").read_text())["eos_token_id"] == end
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    chat = words.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert len(SCRIPT.continuations(tmp_path, ["def "], 4)) == 1
