"""eager: the checkpoint rebuilt as an nn.Module (torch); the reference every other backend meets."""
from . import CUDA_TF32, Backend, lazy, register

register(Backend(name="eager", artifact="checkpoint", devices=("cpu", "cuda"),
                 load=lazy("torch_predictor", "EagerPredictor"),
                 unavailable=lazy("torch_predictor", "torch_unavailable"),
                 bare=lazy("torch_predictor", "bare_module_runner", label="bare nn.Module call"),
                 resident=lazy("torch_predictor", "resident_module_runner",
                               label="GPU-resident nn.Module call, the ceiling"),
                 needs_torch=True, precisions=CUDA_TF32, description="PyTorch eager, from checkpoint.pt"))
