#!/usr/bin/env python
"""Greedy decoding of one causal LM by competitor runtimes, for scripts/bench_generate.py.

Runs in its own virtual environment (by default .venv-others in the checkout, which git ignores; --venv
DIR picks another), never in ptx's: optimum-onnx 0.1.0 pins transformers<4.58 and optimum 2.1, which must
not leak into the project's environment (transformers 5.x). For the same reason this file imports nothing
from ptx.

    python scripts/generate_others.py --setup            # create .venv-others, install the pinned versions
    .venv-others/bin/python scripts/generate_others.py \
        --model-dir DIR --onnx FILE --prompt-ids 1,2,3 --new-tokens 128 --json

DIR is a transformers save_pretrained folder (config.json + weights; no tokenizer needed).
FILE is ptx's decoder ONNX in the Optimum layout (input_ids, attention_mask, position_ids,
past_key_values.{i}.key/value -> logits, present.{i}.key/value).

Printed JSON: {"meta": {...}, "results": {name: {"tokens", "prefill_s", "decode_ms_per_token",
"equal_to_transformers", ...} or {"skipped": "reason"}}}. Timings: prefill_s is the time from the
call until the first new token exists (prompt forward + first argmax); decode_ms_per_token is
(time of last token - time of first token) / (new_tokens - 1). Each runner warms up once, then
the median of --repeats runs is reported.

Each competitor runs in a child process of its own: ONNX Runtime's and OpenVINO's thread pools
would otherwise compete for the cores while idle sessions of the previous runner are alive, and
a C++ abort in one runtime (openvino-genai aborts the process in some misuse cases) must not
lose the others' results.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# The competitors' own environment: beside ptx's, never inside it (see above).
VENV = Path(__file__).resolve().parent.parent / ".venv-others"

# The versions that installed together and worked (checked 2026-11-26, CPU, Python 3.11).
# optimum-onnx 0.1.0 requires optimum~=2.1.0 and transformers<4.58; optimum-intel 1.27.0 is the
# last optimum-intel on optimum-onnx 0.1 (2.x needs optimum 2.3), so it sits in the same venv.
# torch 2.13.0 comes from the local CPU wheel.
PINNED = [
    "torch==2.13.0",
    "transformers==4.57.6",
    "optimum==2.1.0",
    "optimum-onnx==0.1.0",
    "onnx==1.23.2",
    "onnxruntime==1.32.0",
    "onnxruntime-genai==0.18.0",
    "openvino==2026.4.1",
    "openvino-tokenizers==2026.4.1.0",
    "openvino-genai==2026.4.1.0",
    "optimum-intel[openvino]==1.27.0",
    "nncf==3.4.0",
]

RUNNERS = [
    "transformers_eager",     # reference tokens: generate(do_sample=False, min_new_tokens=N)
    "ort_loop",               # bare onnxruntime loop over ptx's own file (as /tmp/gen/exp.py)
    "optimum_ort",            # optimum-cli export onnx + ORTModelForCausalLM.generate
    "ort_genai_ptx_onnx",     # onnxruntime-genai on ptx's own file with a hand-written genai_config.json
    "openvino_genai",         # optimum-cli export openvino (stateful IR) + LLMPipeline, f32 hints
    "openvino_genai_default_hints",  # same IR, CPU plugin defaults (bf16 compute / u8 KV cache on this CPU)
    "openvino_genai_ptx_onnx",       # ptx's file -> ov.convert_model -> optimum-intel's stateful patch -> LLMPipeline
]
# Optional: onnxruntime-genai's model builder output (--og-builder-dir). Not built here: the
# builder of onnxruntime-genai 0.18 imports transformers 5.x classes (Qwen3_5...) and needs a
# tokenizer in the model folder, and it does not support GPT-2 at all.
OPTIONAL = ["ort_genai_builder", "openvino_genai_int4", "openvino_genai_int8"]


def setup(venv: Path):
    if not (venv / "bin" / "python").exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(venv)])
    subprocess.check_call([str(venv / "bin" / "pip"), "install", *PINNED])
    print("installed into", venv)


def median(xs):
    return statistics.median(xs) if xs else None


def timed(fn, prompt, n, repeats):
    """fn(prompt, n) -> (tokens, t0, [time per new token]); warm-up once, median of repeats."""
    fn(prompt, n)
    pre, dec, toks = [], [], None
    for _ in range(repeats):
        toks, t0, ts = fn(prompt, n)
        pre.append(ts[0] - t0)
        dec.append((ts[-1] - ts[0]) / max(len(ts) - 1, 1) * 1e3)
    return {"tokens": [int(t) for t in toks], "prefill_s": median(pre), "decode_ms_per_token": median(dec),
            "prefill_s_min": min(pre), "decode_ms_min": min(dec), "prefill_s_all": pre, "decode_ms_all": dec}


def hf_config(model_dir):
    from transformers import AutoConfig
    return AutoConfig.from_pretrained(model_dir)


def hf_streamer():
    # generate() calls put() once with the prompt, then once per new token: timestamps per token.
    from transformers.generation.streamers import BaseStreamer

    class Stamps(BaseStreamer):
        def __init__(self):
            self.t = []

        def put(self, value):
            self.t.append(time.perf_counter())

        def end(self):
            pass
    return Stamps()


def hf_generate_fn(model):
    import torch

    def run(prompt, n):
        ids = torch.tensor([prompt])
        st = hf_streamer()
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                 do_sample=False, pad_token_id=0, streamer=st)
        return out[0, len(prompt):].tolist(), t0, st.t[1:]
    return run


def run_transformers_eager(a):
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(a.model_dir).eval()
    return timed(hf_generate_fn(m), a.prompt, a.new_tokens, a.repeats)


def run_ort_loop(a):
    # The loop of /tmp/gen/exp.py: full-length attention_mask, explicit position_ids, past grows.
    import numpy as np
    import onnxruntime as ort
    s = ort.InferenceSession(a.onnx, providers=["CPUExecutionProvider"])
    past_names = [i.name for i in s.get_inputs() if i.name.startswith("past_key_values.")]
    shapes = {i.name: i.shape for i in s.get_inputs()}

    def empty(nm):  # [batch, kv_heads, 0, head_dim]; kv_heads and head_dim are static in ptx's export
        sh = shapes[nm]
        return np.zeros((1, sh[1], 0, sh[3]), np.float32)

    def run(prompt, n):
        L = len(prompt)
        feeds = {"input_ids": np.array([prompt], np.int64), "attention_mask": np.ones((1, L), np.int64),
                 "position_ids": np.arange(L, dtype=np.int64)[None]}
        for nm in past_names:
            feeds[nm] = empty(nm)
        toks, ts = [], []
        t0 = time.perf_counter()
        for _ in range(n):
            out = s.run(None, feeds)
            t = int(out[0][0, -1].argmax())
            toks.append(t)
            ts.append(time.perf_counter())
            feeds = {"input_ids": np.array([[t]], np.int64), "attention_mask": np.ones((1, L + 1), np.int64),
                     "position_ids": np.array([[L]], np.int64)}
            feeds.update(zip(past_names, out[1:]))
            L += 1
        return toks, t0, ts
    return timed(run, a.prompt, a.new_tokens, a.repeats)


def optimum_cli():
    return str(Path(sys.executable).parent / "optimum-cli")


def export_once(out_dir, marker, cmd):
    """Run an export command unless out_dir already has its model file; returns seconds or None."""
    if (Path(out_dir) / marker).exists():
        return None
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or not (Path(out_dir) / marker).exists():
        raise RuntimeError("export failed: " + (r.stderr.strip().splitlines() or ["?"])[-1])
    return time.perf_counter() - t


def run_optimum_ort(a):
    # Optimum's own ONNX export of the same weights (not ptx's file): ORTModelForCausalLM needs the
    # config.json/generation_config.json that optimum-cli writes next to model.onnx.
    from optimum.onnxruntime import ORTModelForCausalLM
    out = os.path.join(a.work, "optimum_onnx")
    exp_s = export_once(out, "model.onnx", [optimum_cli(), "export", "onnx", "--model", a.model_dir,
                                             "--task", "text-generation-with-past", out])
    m = ORTModelForCausalLM.from_pretrained(out)
    r = timed(hf_generate_fn(m), a.prompt, a.new_tokens, a.repeats)
    r["export_s"] = exp_s
    return r


def genai_config_for_ptx(cfg, filename):
    # Names of ptx's (= Optimum's) layout. "type": "llama" selects genai's generic decoder-only model
    # and works for GPT-2 too; "type": "gpt2" fails with "Model input was not found: ".
    # past_present_share_buffer must be false: ptx's file concatenates past+new (present grows), it
    # does not write into a max-length buffer.
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    head = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    ctx = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 2048
    eos = cfg.eos_token_id if cfg.eos_token_id is not None else -1
    bos = cfg.bos_token_id if cfg.bos_token_id is not None else eos
    return {
        "model": {
            "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": cfg.pad_token_id if cfg.pad_token_id is not None else eos,
            "context_length": ctx, "type": "llama", "vocab_size": cfg.vocab_size,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": filename, "head_size": head, "hidden_size": cfg.hidden_size,
                "num_attention_heads": heads, "num_hidden_layers": cfg.num_hidden_layers, "num_key_value_heads": kv,
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask", "position_ids": "position_ids",
                           "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
            },
        },
        "search": {"do_sample": False, "num_beams": 1, "num_return_sequences": 1, "max_length": ctx, "min_length": 0,
                   "past_present_share_buffer": False, "early_stopping": True, "top_k": 1, "top_p": 1.0,
                   "temperature": 1.0, "repetition_penalty": 1.0, "length_penalty": 1.0,
                   "no_repeat_ngram_size": 0, "diversity_penalty": 0.0},
    }


def og_generate_fn(model_dir):
    # No tokenizer: Generator + append_tokens(ids). append_tokens runs the prompt; the first
    # generate_next_token picks the first token. min_length = max_length forces N tokens (like
    # min_new_tokens in transformers).
    import onnxruntime_genai as og
    m = og.Model(model_dir)

    def run(prompt, n):
        p = og.GeneratorParams(m)
        p.set_search_options(do_sample=False, max_length=len(prompt) + n, min_length=len(prompt) + n, batch_size=1)
        g = og.Generator(m, p)
        toks, ts = [], []
        t0 = time.perf_counter()
        g.append_tokens([prompt])
        while not g.is_done():
            g.generate_next_token()
            toks.append(int(g.get_next_tokens()[0]))
            ts.append(time.perf_counter())
        return toks, t0, ts
    return run


def run_ort_genai_ptx_onnx(a):
    d = os.path.join(a.work, "ort_genai_ptx")
    os.makedirs(d, exist_ok=True)
    # The same files, not copies: hard links where the folders share a filesystem. onnxruntime-genai 0.18 refuses
    # a symbolic link whose external data resolves outside the link's folder ("External data path escapes model
    # directory"), so the file's .data goes beside it too.
    source = os.path.abspath(a.onnx)
    for name in ("model.onnx", "model.onnx.data"):
        origin = source if name == "model.onnx" else source + ".data"
        link = os.path.join(d, name)
        if os.path.lexists(link):
            os.remove(link)
        if name == "model.onnx.data" and not os.path.exists(origin):
            continue
        try:
            os.link(origin, link)
        except OSError:
            os.symlink(origin, link)
    with open(os.path.join(d, "genai_config.json"), "w") as f:
        json.dump(genai_config_for_ptx(hf_config(a.model_dir), "model.onnx"), f, indent=1)
    return timed(og_generate_fn(d), a.prompt, a.new_tokens, a.repeats)


def run_ort_genai_builder(a):
    if not a.og_builder_dir:
        raise SkipRunner("no --og-builder-dir (builder of onnxruntime-genai 0.18 needs transformers 5.x and a "
                         "tokenizer in the model folder; GPT-2 is not supported by it)")
    return timed(og_generate_fn(a.og_builder_dir), a.prompt, a.new_tokens, a.repeats)


# INFERENCE_PRECISION_HINT=f32: on CPUs with avx512_bf16 (this AMD EPYC) the CPU plugin computes in
# bf16 by default; KV_CACHE_PRECISION=f32: by default it compresses the KV cache to u8. Either one
# changes greedy tokens against transformers fp32 (llama: bf16 diverges at token 5; gpt2: u8 KV
# diverges), so the f32 pair is the like-for-like setting.
OV_F32 = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}


def ov_generate_fn(model_dir, props):
    # LLMPipeline opens a folder with openvino_model.xml (stateful: inputs input_ids, attention_mask,
    # [position_ids], beam_idx) and config.json; no tokenizer IR needed when generate() gets an
    # ov.Tensor of ids (returns EncodedResults). The streamer must be a token-level StreamerBase: a
    # plain callback is wrapped in a TextStreamer that needs the detokenizer and aborts the process.
    import numpy as np
    import openvino as ov
    import openvino_genai as ovg
    pipe = ovg.LLMPipeline(model_dir, "CPU", **props)

    class Stamps(ovg.StreamerBase):
        def __init__(self):
            super().__init__()
            self.t = []

        def write(self, token):
            self.t.append(time.perf_counter())
            return ovg.StreamingStatus.RUNNING

        def end(self):
            pass

    def run(prompt, n):
        cfg = ovg.GenerationConfig()
        cfg.max_new_tokens = n
        cfg.min_new_tokens = n
        cfg.do_sample = False
        st = Stamps()
        ids = ov.Tensor(np.array([prompt], dtype=np.int64))
        t0 = time.perf_counter()
        r = pipe.generate(ids, cfg, streamer=st)
        return list(r.tokens[0]), t0, st.t
    return run


def ov_ir_from_optimum(a):
    out = os.path.join(a.work, "openvino_ir")
    # --weight-format fp32: otherwise optimum-intel may compress weights (int8 for larger models).
    exp_s = export_once(out, "openvino_model.xml", [optimum_cli(), "export", "openvino", "--model", a.model_dir,
                                                    "--task", "text-generation-with-past", "--weight-format", "fp32", out])
    return out, exp_s


def run_openvino_genai(a):
    out, exp_s = ov_ir_from_optimum(a)
    r = timed(ov_generate_fn(out, OV_F32), a.prompt, a.new_tokens, a.repeats)
    r.update(export_s=exp_s, properties=OV_F32)
    return r


def run_openvino_genai_default_hints(a):
    out, exp_s = ov_ir_from_optimum(a)
    r = timed(ov_generate_fn(out, {}), a.prompt, a.new_tokens, a.repeats)
    r.update(export_s=exp_s, properties={})
    return r


def ov_ir_compressed(a, weight_format):
    """optimum-intel's IR with its weights compressed as `optimum-cli export openvino --weight-format int4|int8`
    does by default (int4: asymmetric groups of 128, the embedding and head in int8; int8: per channel). A
    model whose widths 128 does not divide (SmolLM2's 576) is refused at 128: its int4 takes the largest group
    of 128, 64 or 32 that divides them, as a user passes --group-size."""
    out = os.path.join(a.work, f"openvino_ir_{weight_format}")
    extra = []
    if weight_format == "int4":
        cfg = hf_config(a.model_dir)
        widths = [cfg.hidden_size, cfg.intermediate_size]
        extra = ["--group-size", str(next((g for g in (128, 64, 32) if all(w % g == 0 for w in widths)), -1))]
    exp_s = export_once(out, "openvino_model.xml", [optimum_cli(), "export", "openvino", "--model", a.model_dir,
                                                    "--task", "text-generation-with-past", "--weight-format",
                                                    weight_format, *extra, out])
    return out, exp_s


def run_openvino_genai_int4(a):
    # the CPU plugin's own hints, as a user of a compressed IR runs it (on a CPU with bf16: bf16 compute, u8 cache)
    out, exp_s = ov_ir_compressed(a, "int4")
    r = timed(ov_generate_fn(out, {}), a.prompt, a.new_tokens, a.repeats)
    r.update(export_s=exp_s, properties={})
    return r


def run_openvino_genai_int8(a):
    out, exp_s = ov_ir_compressed(a, "int8")
    r = timed(ov_generate_fn(out, {}), a.prompt, a.new_tokens, a.repeats)
    r.update(export_s=exp_s, properties={})
    return r


def run_openvino_genai_ptx_onnx(a):
    # ptx's file converted as is has 3 + 2*layers inputs; LLMPipeline refuses it ("Model should have
    # 3 or 4 inputs ... but you have '19' inputs"). optimum-intel's patch_stateful_decoder turns the
    # past/present pairs into ReadValue/Assign states and adds beam_idx, which LLMPipeline accepts.
    import shutil
    import openvino as ov
    from optimum.exporters.openvino.stateful import patch_stateful_decoder
    out = os.path.join(a.work, "openvino_ptx_ir")
    t = time.perf_counter()
    if not os.path.exists(os.path.join(out, "openvino_model.xml")):
        os.makedirs(out, exist_ok=True)
        m = ov.convert_model(a.onnx)
        patch_stateful_decoder(hf_config(a.model_dir), m)
        ov.save_model(m, os.path.join(out, "openvino_model.xml"), compress_to_fp16=False)
        for f in ("config.json", "generation_config.json"):
            if os.path.exists(os.path.join(a.model_dir, f)):
                shutil.copy(os.path.join(a.model_dir, f), out)
        conv_s = time.perf_counter() - t
    else:
        conv_s = None
    r = timed(ov_generate_fn(out, OV_F32), a.prompt, a.new_tokens, a.repeats)
    r.update(export_s=conv_s, properties=OV_F32)
    return r


class SkipRunner(Exception):
    pass


def one_line(e):
    s = f"{type(e).__name__}: {e}".strip().replace("\n", " ")
    return s[:400]


def child(a):
    fn = globals()["run_" + a.only]
    try:
        r = fn(a)
    except SkipRunner as e:
        r = {"skipped": str(e)}
    except Exception as e:  # report, do not crash the benchmark
        r = {"skipped": one_line(e)}
    print("@@RESULT " + json.dumps(r))


def versions():
    from importlib import metadata
    v = {}
    for p in ("torch", "transformers", "optimum", "optimum-onnx", "onnxruntime", "onnxruntime-genai", "openvino",
              "openvino-genai", "openvino-tokenizers", "optimum-intel"):
        try:
            v[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            v[p] = None
    return v


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setup", action="store_true", help="create the --venv folder and pip install the pinned versions")
    ap.add_argument("--venv", type=Path, default=VENV,
                    help="with --setup: where (default: .venv-others in the checkout)")
    ap.add_argument("--model-dir", help="transformers save_pretrained folder")
    ap.add_argument("--onnx", help="ptx's decoder ONNX (Optimum layout)")
    ap.add_argument("--prompt-ids", help="comma-separated token ids")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up; medians reported")
    ap.add_argument("--work", help="folder for exports (reused if present); default MODEL_DIR.others")
    ap.add_argument("--og-builder-dir", help="optional: folder made by onnxruntime_genai.models.builder")
    ap.add_argument("--only", help="comma-separated runner names: " + ",".join(RUNNERS + OPTIONAL))
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                    help="before each runner wait up to S seconds for the 1-minute load average to fall below 0.5")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.setup:
        return setup(a.venv)
    if not (a.model_dir and a.prompt_ids):
        ap.error("--model-dir and --prompt-ids are required")
    a.prompt = [int(x) for x in a.prompt_ids.split(",") if x.strip()]
    a.work = a.work or a.model_dir.rstrip("/") + ".others"
    os.makedirs(a.work, exist_ok=True)
    if a.child:
        return child(a)

    names = a.only.split(",") if a.only else RUNNERS + (OPTIONAL if a.og_builder_dir else [])
    results = {}
    for name in names:
        if name not in RUNNERS + OPTIONAL:
            results[name] = {"skipped": "unknown runner"}
            continue
        if name in ("ort_loop", "ort_genai_ptx_onnx", "openvino_genai_ptx_onnx") and not a.onnx:
            results[name] = {"skipped": "no --onnx"}
            continue
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--only", name, "--model-dir", a.model_dir,
               "--prompt-ids", a.prompt_ids, "--new-tokens", str(a.new_tokens), "--repeats", str(a.repeats),
               "--work", a.work]
        if a.onnx:
            cmd += ["--onnx", a.onnx]
        if a.og_builder_dir:
            cmd += ["--og-builder-dir", a.og_builder_dir]
        # On a small shared machine other processes distort the timings; optionally wait for quiet,
        # and record the load each runner started under.
        deadline = time.time() + a.wait_quiet
        while os.getloadavg()[0] >= 0.5 and time.time() < deadline:
            time.sleep(5)
        load0 = os.getloadavg()[0]
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        line = [x for x in p.stdout.splitlines() if x.startswith("@@RESULT ")]
        if line:
            results[name] = json.loads(line[-1][len("@@RESULT "):])
        else:
            tail = (p.stderr.strip().splitlines() or ["no output"])[-3:]
            results[name] = {"skipped": f"child exited {p.returncode}: " + " | ".join(tail)[:400]}
        results[name]["wall_s"] = round(time.perf_counter() - t, 1)
        results[name]["loadavg_start"] = load0
        if not a.json:
            r = results[name]
            print(name, {k: v for k, v in r.items() if k not in ("tokens", "prefill_s_all", "decode_ms_all")},
                  file=sys.stderr, flush=True)

    ref = results.get("transformers_eager", {}).get("tokens")
    for name, r in results.items():
        if ref and "tokens" in r:
            r["equal_to_transformers"] = r["tokens"] == ref
            r["first_mismatch"] = next((i for i, (x, y) in enumerate(zip(r["tokens"], ref)) if x != y),
                                       None if len(r["tokens"]) == len(ref) else min(len(ref), len(r["tokens"])))
    out = {"meta": {"model_dir": a.model_dir, "onnx": a.onnx, "prompt_len": len(a.prompt), "new_tokens": a.new_tokens,
                    "repeats": a.repeats, "cpu": cpu_name(), "cores": os.cpu_count(), "versions": versions(),
                    # other processes on a small shared machine skew timings: record the load
                    "loadavg_end": os.getloadavg()},
           "results": results}
    if a.json:
        print(json.dumps(out))
    else:
        for name, r in results.items():
            if "skipped" in r:
                print(f"{name:32s} skipped: {r['skipped']}")
            else:
                print(f"{name:32s} prefill {r['prefill_s']*1e3:8.1f} ms  decode {r['decode_ms_per_token']:7.2f} ms/token  "
                      f"equal={r.get('equal_to_transformers')}")


if __name__ == "__main__":
    main()
