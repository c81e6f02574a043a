"""Detector-shaped ONNX graphs for locate's tests and scripts/bench_locate.py, written with onnx.helper
(no export to wait for): a deep convolution net whose batch norms are folded into its convolutions, as
onnxruntime's pre-processing leaves a file before its quantizer (a stem, residual blocks, a neck that
upsamples and concatenates, two heads), its int8 QDQ twin made by onnxruntime.quantization, and one
Conv's weight scale planted coarse in that twin.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def detector(path: Path, blocks: int = 4, channels: int = 8, seed: int = 0) -> Path:
    """A BN-folded conv net of ``blocks`` residual blocks per stage (three stages, the last two at half
    the size before), every Conv with its bias (a folded batch norm), each Relu its own node; about
    ``15 * blocks + 22`` nodes. Input x [N, 3, H, W] (H, W divisible by 4), outputs boxes and scores."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    count = iter(range(1 << 20))

    def conv(x, cin, cout, k=3, stride=1, relu=True, name=None):
        i = next(count)
        name = name or f"conv{i}"
        # a batch norm folded in: per-channel scales of the weight, a bias from its shift
        w = rng.normal(0, np.sqrt(2 / (cin * k * k)), (cout, cin, k, k)) * rng.uniform(0.5, 1.5, (cout, 1, 1, 1))
        inits.extend([numpy_helper.from_array(w.astype(np.float32), f"{name}.weight"),
                      numpy_helper.from_array(rng.normal(0, 0.1, cout).astype(np.float32), f"{name}.bias")])
        nodes.append(helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [f"{name}_out"], name=name,
                                      pads=[k // 2] * 4, strides=[stride] * 2, kernel_shape=[k, k]))
        if not relu:
            return f"{name}_out"
        nodes.append(helper.make_node("Relu", [f"{name}_out"], [f"{name}_relu"], name=f"{name}_relu"))
        return f"{name}_relu"

    def block(x, c):
        y = conv(conv(x, c, c), c, c, relu=False)
        i = next(count)
        nodes.append(helper.make_node("Add", [x, y], [f"add{i}"], name=f"add{i}"))
        nodes.append(helper.make_node("Relu", [f"add{i}"], [f"add{i}_relu"], name=f"add{i}_relu"))
        return f"add{i}_relu"

    c = channels
    x = conv("x", 3, c, name="stem")
    stages = []
    for s, stride in enumerate((1, 2, 2)):
        if stride != 1:
            x = conv(x, c, c, stride=2)
        for _ in range(blocks):
            x = block(x, c)
        stages.append(x)
    inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "up_scales"))
    up = stages[-1]
    for k, lateral in enumerate(reversed(stages[:-1])):  # the neck: upsample, concatenate, mix
        nodes.append(helper.make_node("Resize", [up, "", "up_scales"], [f"up{k}"], name=f"up{k}", mode="nearest"))
        nodes.append(helper.make_node("Concat", [f"up{k}", lateral], [f"cat{k}"], name=f"cat{k}", axis=1))
        up = conv(f"cat{k}", 2 * c, c)
    boxes = conv(conv(up, c, c), c, 4, k=1, relu=False, name="box_head")
    score = conv(conv(up, c, c), c, 1, k=1, relu=False, name="score_head")
    nodes.append(helper.make_node("Sigmoid", [score], ["scores"], name="score_sigmoid"))
    nodes.append(helper.make_node("Identity", [boxes], ["boxes"], name="boxes"))
    typed = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", c, "H", "W"])
             for name, c in (("x", 3), ("boxes", 4), ("scores", 1))]
    graph = helper.make_graph(nodes, path.stem, typed[:1], typed[1:], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def pictures(count: int = 2, size: int = 32, seed: int = 1) -> np.ndarray:
    """Inputs the detector sees: smooth shapes on a page, about zero mean and unit spread."""
    rng = np.random.default_rng(seed)
    page = rng.normal(0, 0.3, (count, 3, size, size))
    for b in range(count):
        for _ in range(6):
            y, x, h, w = rng.integers(0, size - 8, 2).tolist() + rng.integers(3, 8, 2).tolist()
            page[b, :, y:y + h, x:x + w] += rng.normal(0, 1.5, (3, 1, 1))
    return page.astype(np.float32)


def quantize(f32: Path, int8: Path, calibration: np.ndarray) -> Path:
    """``int8``: onnxruntime.quantization's static QDQ file of ``f32`` (per channel, uint8 activations,
    int8 weights in 7 bits), calibrated on ``calibration``'s samples one at a time. 7-bit weights as ptx's own
    int8 files have them (export/formats/onnx_int8.py): a CPU without VNNI (AVX2) adds two u8 x s8 products in 16
    bits, which saturates with full-range weights: there the unplanted stem alone departed by 13%."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Samples(CalibrationDataReader):
        def __init__(self):
            self.left = iter([{"x": calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.left, None)

    quantize_static(str(f32), str(int8), Samples(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True)
    return int8


def plant(int8: Path, conv: str, coarser: float) -> Path:
    """The weight of the Conv named ``conv`` in the QDQ file ``int8`` quantized again with a scale
    ``coarser`` times its own (fewer int8 steps): that Conv adds the most error, alone."""
    model = onnx.load(str(int8))
    node = next(n for n in model.graph.node if n.name == conv)
    by_output = {o: n for n in model.graph.node for o in n.output}
    dq = by_output[node.input[1]]
    inits = {t.name: t for t in model.graph.initializer}
    q, scale, zero = (numpy_helper.to_array(inits[n]) for n in dq.input[:3])
    shape = (-1,) + (1,) * (q.ndim - 1)
    weight = (q.astype(np.float32) - zero.reshape(shape)) * scale.reshape(shape)
    scale = (scale * coarser).astype(np.float32)
    q = np.clip(np.round(weight / scale.reshape(shape)) + zero.reshape(shape), -128, 127).astype(q.dtype)
    inits[dq.input[0]].CopyFrom(numpy_helper.from_array(q, dq.input[0]))
    inits[dq.input[1]].CopyFrom(numpy_helper.from_array(scale, dq.input[1]))
    onnx.save(model, str(int8))
    return int8
