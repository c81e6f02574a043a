"""onnx.reference: an ONNX file through the onnx package's own evaluator (numpy, by the operators'
definitions): a third opinion where runtimes disagree. It computes every node in numpy, convolutions
included, so it runs cases of at most 100,000 input values (a few seconds at most for a small CNN), on
models of at most 512 MB of weights (it holds them as numpy arrays beside the parsed graph). Its
disagreement alone is a note, not a verdict (--strict makes it one), and it is never benched,
chosen or served for speed."""
from . import Backend, lazy, register

register(Backend(name="onnx.reference", artifact="onnx", devices=("cpu",),
                 open=lazy("runtime.reference_runner", "ReferenceRunner.open"), unavailable=lambda device: None,
                 needs_torch=False, third_opinion=True, case_values=100_000,
                 # 2.24x a 134 MB MLP's weights at a batch of 8 (scripts/backend_memory.py, Intel Xeon, 2026-11-26);
                 # every intermediate it computes is a numpy array beside them, more on a wide network's pictures
                 holds=3.0, model_bytes=512_000_000))
