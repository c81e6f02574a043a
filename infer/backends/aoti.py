"""aoti: model.pt2 (torch.export + AOTInductor) through torch._inductor.aoti_load_package (torch,
no Python model code). The package runs on the device it was compiled for."""
from . import CUDA_TF32, Backend, lazy, register

register(Backend(name="aoti", artifact="pt2", devices=("cpu", "cuda"), load=lazy("aoti_predictor", "AotiPredictor"),
                 unavailable=lazy("torch_predictor", "torch_unavailable"),
                 bare=lazy("torch_predictor", "bare_module_runner", label="bare aoti_load_package call"),
                 needs_torch=True, precisions=CUDA_TF32, description="AOTInductor package, from model.pt2",
                 open_file=lazy("torch_tensor", "Pt2TensorModel")))
