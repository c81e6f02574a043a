"""ort-cuda: an ONNX file through ONNX Runtime's CUDA provider; never silently on the CPU. f32 runs with TF32
off (ORT's use_tf32=0); tf32 runs the same file with it on."""
from . import CUDA_TF32, Backend, lazy, register

register(Backend(name="ort-cuda", artifact="onnx", devices=("cuda",), open=lazy("runtime.ort_runner", "OrtRunner.open"),
                 unavailable=lazy("runtime.ort_session", "cuda_unavailable"),
                 needs_torch=False, precisions=CUDA_TF32, description="ONNX Runtime, CUDA provider (onnxruntime-gpu, CUDA 13, cuDNN 9)",
                 static=lazy("runtime.cuda_placement", "static_summary")))
