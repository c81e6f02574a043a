#!/usr/bin/env python3
"""Issue 107's acceptance at a published config's size: serve one exported chat model whose template calls tools
(scripts/make_lm_folder.py --qwen-chat: Qwen2.5-0.5B's config, Qwen2.5-Instruct's template, a 32k tokenizer, logits
padded past it) and ask it, with the real `openai` client, what the suite asks its tiny model:

- 100 answers held to a JSON schema of nested objects, enums, arrays and required fields (tests/test_grammar.py's),
  sampled at temperature 1.0 with seeds 0-99, eight at a time in the server's batch: how many validate;
- 100 forced tool calls (tool_choice "required", tests/test_tool_calls.py's two functions), the same seeds: how
  many give one call whose arguments validate against its function's parameters;
- one streamed forced call: whether its pieces reassemble to the call answered whole.

    python scripts/openai_check.py /data/qt-out/model.int4.onnx [--backend ort-cpu] [--json result.json]

The server listens on a free loopback port, every request is bounded, and it is stopped by its own process id
(tests/serving.py). Exit 0 where every answer validates and the stream reassembles; 1 otherwise, saying which.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import serving  # noqa: E402  (a server on a free port, bounded waits, stopped by its pid)
from test_grammar import SCHEMA, TOKENS  # noqa: E402  (the suite's schema: what is asked here at scale)
from test_tool_calls import TOOLS  # noqa: E402

from ptx.machine import describe_cpu, usable_cores  # noqa: E402

REQUEST_S = 600  # one answer of 300 tokens among 7 others, on 2 cores: well under this
ASK = [{"role": "user", "content": "Describe someone as JSON."}]
CALL = [{"role": "user", "content": "Weather in Paris?"}]
FORMAT = {"type": "json_schema", "json_schema": {"name": "someone", "schema": SCHEMA, "strict": True}}
PARAMETERS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def _validates(text: str, schema: dict) -> bool:
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), schema)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def schema_answers(client, seeds) -> dict:
    def ask(seed):
        return client.chat.completions.create(model="chat", messages=ASK, max_tokens=TOKENS, temperature=1.0,
                                              seed=seed, response_format=FORMAT)

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ask, seeds))
    texts = [a.choices[0].message.content for a in got]
    bad = [text for text in texts if not _validates(text, SCHEMA)]
    return {"asked": len(got), "valid": len(got) - len(bad), "distinct": len(set(texts)),
            "stopped": sum(a.choices[0].finish_reason == "stop" for a in got),
            "tokens": sum(a.usage.completion_tokens for a in got), "seconds": round(time.perf_counter() - started, 1),
            "first_bad": bad[0] if bad else None, "example": texts[0]}


def forced_calls(client, seeds) -> dict:
    def ask(seed):
        return client.chat.completions.create(model="chat", messages=CALL, tools=TOOLS, tool_choice="required",
                                              temperature=1.0, seed=seed, max_tokens=200)

    def valid(answer) -> bool:
        choice = answer.choices[0]
        calls = choice.message.tool_calls or []
        return (choice.finish_reason == "tool_calls" and len(calls) == 1 and calls[0].function.name in PARAMETERS
                and _validates(calls[0].function.arguments, PARAMETERS[calls[0].function.name]))

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ask, seeds))
    bad = [a.choices[0].message for a in got if not valid(a)]
    called = [a.choices[0].message.tool_calls[0].function for a in got if valid(a)]
    return {"asked": len(got), "valid": len(got) - len(bad), "names": sorted({c.name for c in called}),
            "tokens": sum(a.usage.completion_tokens for a in got), "seconds": round(time.perf_counter() - started, 1),
            "first_bad": bad[0].model_dump() if bad else None,
            "example": {"name": called[0].name, "arguments": called[0].arguments} if called else None}


def streamed_call(client, seed: int = 3) -> dict:
    asked = dict(model="chat", messages=CALL, tools=TOOLS, tool_choice="required", temperature=1.0, seed=seed,
                 max_tokens=200)
    whole = client.chat.completions.create(**asked).choices[0].message.tool_calls[0].function
    parts: dict[int, dict] = {}
    for chunk in client.chat.completions.create(**asked, stream=True):
        for delta in (chunk.choices[0].delta.tool_calls or ()) if chunk.choices else ():
            part = parts.setdefault(delta.index, {"name": "", "arguments": ""})
            part["name"] += delta.function.name or ""
            part["arguments"] += delta.function.arguments or ""
    same = list(parts) == [0] and (parts[0]["name"], parts[0]["arguments"]) == (whole.name, whole.arguments)
    return {"reassembles": same, "whole": {"name": whole.name, "arguments": whole.arguments},
            "streamed": list(parts.values())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="an exported chat LM with its tokenizer and a tool-calling template")
    parser.add_argument("--backend", default="ort-cpu")
    parser.add_argument("--answers", type=int, default=100, help="how many of each (seeds 0 to N-1)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    import openai  # noqa: F401  (the client an app calls with; said before a server starts)

    seeds = range(args.answers)
    with tempfile.TemporaryDirectory() as root, serving.running(
            root, str(args.file), args=("--name", "chat", "--backend", args.backend, "--max-batch-size", 8)) as server:
        client = serving.openai_client(server, REQUEST_S)
        result = {"file": str(args.file), "backend": args.backend, "machine": f"{describe_cpu()}, {usable_cores()} cores",
                  "date": time.strftime("%Y-%m-%d"), "schema": schema_answers(client, seeds),
                  "tools": forced_calls(client, seeds), "stream": streamed_call(client)}
    schema, tools, stream = result["schema"], result["tools"], result["stream"]
    print(f"response_format json_schema: {schema['valid']} of {schema['asked']} validate ({schema['distinct']} "
          f"distinct, {schema['stopped']} ended by the grammar, {schema['tokens']} tokens in {schema['seconds']} s)")
    print(f"forced tool calls: {tools['valid']} of {tools['asked']} validate (functions {', '.join(tools['names'])}; "
          f"{tools['tokens']} tokens in {tools['seconds']} s)")
    print(f"a streamed call reassembles to the whole: {'yes' if stream['reassembles'] else 'NO'}")
    print(f"e.g. {schema['example']}\n     {tools['example']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    failed = [what for what, ok in [("schema answers", schema["valid"] == schema["asked"]),
                                    ("tool calls", tools["valid"] == tools["asked"]),
                                    ("the stream", stream["reassembles"])] if not ok]
    if failed:
        print(f"FAILED: {', '.join(failed)} (first: {schema['first_bad'] or tools['first_bad'] or stream})",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
