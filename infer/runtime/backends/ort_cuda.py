"""ort-cuda: an ONNX file through ONNX Runtime's CUDA provider (onnxruntime-gpu, CUDA 13, cuDNN 9); never
silently on the CPU. f32 runs with TF32 off (ORT's use_tf32=0); tf32 runs the same file with it on."""
from . import ORT_CUDA, Backend, lazy, register

register(Backend(name="ort-cuda", artifact="onnx", devices=("cuda",), open=lazy("runtime.ort_runner", "OrtRunner.open"),
                 static=lazy("runtime.cuda_placement", "static_summary"), **ORT_CUDA))
