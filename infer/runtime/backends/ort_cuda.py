"""ort-cuda: an ONNX file through ONNX Runtime's CUDA provider (onnxruntime-gpu, CUDA 13, cuDNN 9); never
silently on the CPU. f32 runs with TF32 off (ORT's use_tf32=0); tf32 runs the same file with it on. int4 runs a
decoder's weight-only model.int4.onnx: ONNX Runtime's CUDA provider has the MatMulNBits, GatherBlockQuantized and
RotaryEmbedding kernels in float32 that the file's graph holds (its static placement leaves only shape nodes on the
CPU, as for the f32 file)."""
from . import CUDA_TF32, ORT_CUDA, Backend, lazy, register

register(Backend(name="ort-cuda", artifact="onnx", devices=("cuda",), open=lazy("runtime.ort_runner", "OrtRunner.open"),
                 static=lazy("runtime.cuda_placement", "static_summary"),
                 **dict(ORT_CUDA, precisions=(*CUDA_TF32, ("int4", "onnx-int4")))))
