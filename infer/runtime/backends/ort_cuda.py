"""ort-cuda: an ONNX file through ONNX Runtime's CUDA provider; never silently on the CPU. f32 runs with TF32
off (ORT's use_tf32=0); tf32 runs the same file with it on."""
from . import CUDA_TF32, Backend, lazy, register

register(Backend(name="ort-cuda", artifact="onnx", devices=("cuda",), load=lazy("runtime.ort_runner", "open_artifact_model"),
                 unavailable=lazy("runtime.ort_session", "cuda_unavailable"),
                 needs_torch=False, precisions=CUDA_TF32, description="ONNX Runtime, CUDA provider (onnxruntime-gpu, CUDA 13, cuDNN 9)",
                 static=lazy("runtime.cuda_placement", "static_summary"),
                 open_file=lazy("runtime.ort_runner", "open_file_runner")))
