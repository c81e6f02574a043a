"""Greedy decoding of a file exported with `ptx export ... --static-cache`, with onnxruntime and numpy alone (no ptx,
no torch): each layer's past and present bound to one buffer, the mask over the whole buffer, the new positions'
slots in cache_position. Prints the new token ids.

    python3 docs/examples/static_loop.py runs/lm-static/model.onnx 5,17,93 10
"""
import sys

import numpy as np
import onnxruntime as ort

path, prompt, new = sys.argv[1], [int(t) for t in sys.argv[2].split(",")], int(sys.argv[3])
session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
inputs = {i.name: i for i in session.get_inputs()}
capacity = len(prompt) + new  # the buffer: every position this decoding reaches
pasts = [name for name in inputs if name.startswith("past_key_values.")]
buffers = {name: ort.OrtValue.ortvalue_from_numpy(
    np.zeros((1, inputs[name].shape[1], capacity, inputs[name].shape[3]), np.float32)) for name in pasts}

ids, length, tokens = prompt, 0, []
for _ in range(new):
    width = len(ids)
    mask = np.zeros((1, capacity), np.int64)
    mask[0, :length + width] = 1  # the positions filled, this run's included
    feeds = {"input_ids": np.array([ids], np.int64), "attention_mask": mask,
             "position_ids": np.arange(length, length + width, dtype=np.int64)[None],
             "cache_position": np.arange(length, length + width, dtype=np.int64)}
    if "logits_to_keep" in inputs:
        feeds["logits_to_keep"] = np.array([width - 1], np.int64)  # the last position's logits only
    binding = session.io_binding()
    binding.bind_output("logits", "cpu")  # the first output bound: get_outputs()[0]
    for name, value in feeds.items():
        binding.bind_cpu_input(name, value)
    for name, buffer in buffers.items():  # the present written into the past's own memory
        binding.bind_ortvalue_input(name, buffer)
        binding.bind_ortvalue_output(name.replace("past_key_values.", "present."), buffer)
    session.run_with_iobinding(binding)
    logits = binding.get_outputs()[0].numpy()
    ids, length = [int(logits[0, -1].argmax())], length + width
    tokens += ids
print(" ".join(map(str, tokens)))
