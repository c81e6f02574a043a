"""ptx's decoder rewrites on the causal-LM families transformers builds, each from a tiny config (random weights).

    python scripts/lm_families.py [--families llama,phi,...] [--out lm-families]

For each family: `ptx export --module scripts/lm_families.py:NAME --format onnx,onnx-int8w,onnx-int4`, with
and without --ort-attention, and `--format onnx --static-cache`, then `ptx verify model.onnx --backends
ort-cpu,openvino` on the plain file. Prints one row per family: export's verdicts recorded in the int8 and int4
files (ONNX Runtime's and OpenVINO's rows), the rotations written as one op, the layers whose attention OpenVINO's
operator runs, verify's exit status and whether --ort-attention and --static-cache exported (or the one-line
refusal). docs/quantized-lms.md records a run; five of these
families are kept in the suite by tests/test_lm_families.py.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

# The shape of every family's tiny model: 2 layers of 64, weights drawn at 0.2 so that eager's top tokens are clear.
SHAPE = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=256, initializer_range=0.2)
GPT2_SHAPE = dict(vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_positions=256, initializer_range=0.2)
OPT_SHAPE = dict(vocab_size=256, hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=256, word_embed_proj_dim=64, init_std=0.2)
# family: (model class, config class, its config)
FAMILIES = {
    "llama": ("LlamaForCausalLM", "LlamaConfig", dict(SHAPE, num_key_value_heads=2)),
    "mistral": ("MistralForCausalLM", "MistralConfig", dict(SHAPE, num_key_value_heads=2, sliding_window=None)),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", dict(SHAPE, num_key_value_heads=2, tie_word_embeddings=True)),
    "qwen3": ("Qwen3ForCausalLM", "Qwen3Config", dict(SHAPE, num_key_value_heads=2, head_dim=16)),
    "phi3": ("Phi3ForCausalLM", "Phi3Config", dict(SHAPE, num_key_value_heads=4, pad_token_id=0)),
    "phi": ("PhiForCausalLM", "PhiConfig", dict(SHAPE, partial_rotary_factor=0.5)),
    "gemma": ("GemmaForCausalLM", "GemmaConfig", dict(SHAPE, num_key_value_heads=1, head_dim=16)),
    "gemma2": ("Gemma2ForCausalLM", "Gemma2Config", dict(SHAPE, num_key_value_heads=2, head_dim=16,
                                                           sliding_window=512)),
    "gpt_neox": ("GPTNeoXForCausalLM", "GPTNeoXConfig", dict(SHAPE, rotary_pct=0.25)),
    "stablelm": ("StableLmForCausalLM", "StableLmConfig", dict(SHAPE, num_key_value_heads=2,
                                                               partial_rotary_factor=0.25)),
    "granite": ("GraniteForCausalLM", "GraniteConfig", dict(SHAPE, num_key_value_heads=2)),
    "olmo2": ("Olmo2ForCausalLM", "Olmo2Config", dict(SHAPE, num_key_value_heads=2)),
    "smollm3": ("SmolLM3ForCausalLM", "SmolLM3Config", dict(SHAPE, num_key_value_heads=2, no_rope_layer_interval=2,
                                                            pad_token_id=0)),
    "gpt2": ("GPT2LMHeadModel", "GPT2Config", GPT2_SHAPE),
    "opt": ("OPTForCausalLM", "OPTConfig", OPT_SHAPE),
}


def build(name: str):
    import torch
    import transformers

    model, config, values = FAMILIES[name]
    torch.manual_seed(0)
    return getattr(transformers, model)(getattr(transformers, config)(**values)).eval()


# `ptx export --module scripts/lm_families.py:NAME` calls these
for _name in FAMILIES:
    globals()[_name] = (lambda name: lambda: build(name))(_name)


def _verdicts(path: Path) -> str:
    from ptx.contract.verdict import recorded_verdicts
    from ptx.infer.formats.model_files import read_model_file

    if not path.exists():
        return "no file"
    return ", ".join(f"{label} {v.status}" for label, v in recorded_verdicts(read_model_file(path).metadata).items())


def _rotations(path: Path) -> str:
    from ptx.infer.formats.model_files import read_model_file

    if not path.exists():
        return "-"
    said = read_model_file(path).metadata.get("quantization", "")
    found = re.search(r"(\d+) rotary rotations as RotaryEmbedding", said)
    return found[1] if found else "0"


def _fused(path: Path) -> str:
    import openvino as ov

    from ptx.infer.runtime.openvino_attention import fuse_attention

    return str(fuse_attention(ov.Core().read_model(str(path)))) if path.exists() else "-"


def family_row(name: str, out: Path) -> list[str]:
    here = Path(__file__).resolve()
    plain, in_place, static = out / name, out / f"{name}-in-place", out / f"{name}-static-cache"
    cells = [name]
    every = "onnx,onnx-int8w,onnx-int4"
    for folder, formats, extra in ((plain, every, []), (in_place, every, ["--ort-attention"]),
                                   (static, "onnx", ["--static-cache"])):
        done = subprocess.run(["ptx", "export", "--module", f"{here}:{name}", "--format", formats,
                               "--out", str(folder), "--force", *extra], capture_output=True, text=True)
        if folder is plain:
            if done.returncode:
                return cells + [f"export failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"]
            verify = subprocess.run(["ptx", "verify", str(plain / "model.onnx"), "--backends", "ort-cpu,openvino"],
                                    capture_output=True, text=True)
            cells += [_verdicts(plain / "model.int8w.onnx"), _verdicts(plain / "model.int4.onnx"),
                      _rotations(plain / "model.int8w.onnx"), _fused(plain / "model.onnx"), f"exit {verify.returncode}"]
        else:
            cells.append("yes" if done.returncode == 0 else (done.stderr.strip().splitlines() or ["?"])[-1])
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help=f"of {', '.join(FAMILIES)}")
    parser.add_argument("--out", type=Path, default=Path("lm-families"))
    args = parser.parse_args()
    names = [n for n in args.families.split(",") if n]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise SystemExit(f"unknown families {', '.join(unknown)}: choose from {', '.join(FAMILIES)}")
    print("| family | int8 verdicts | int4 verdicts | rotations as one op | OpenVINO's attention operator (layers) "
          "| ptx verify | --ort-attention | --static-cache |")
    print("| --- | --- | --- | ---: | ---: | --- | --- | --- |")
    for name in names:
        print("| " + " | ".join(family_row(name, args.out)) + " |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
