"""torchscript: model.torchscript.pt through torch.jit (torch, no Python model code)."""
from . import CUDA_TF32, Backend, lazy, register

register(Backend(name="torchscript", artifact="torchscript", devices=("cpu", "cuda"),
                 load=lazy("torch_predictor", "TorchScriptPredictor"),
                 unavailable=lazy("torch_predictor", "torch_unavailable"),
                 bare=lazy("torch_predictor", "bare_module_runner", label="bare torch.jit module call"),
                 resident=lazy("torch_predictor", "resident_module_runner",
                               label="GPU-resident torch.jit module call, the ceiling"),
                 needs_torch=True, precisions=CUDA_TF32, description="TorchScript, from model.torchscript.pt",
                 open_file=lazy("torch_tensor", "TorchScriptTensorModel")))
