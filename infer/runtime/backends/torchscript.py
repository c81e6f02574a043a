"""torchscript: a TorchScript file through torch.jit (torch, no Python model code)."""
from . import CUDA_TF32, Backend, lazy, register

register(Backend(name="torchscript", artifact="torchscript", devices=("cpu", "cuda"),
                 open=lazy("runtime.torch_runner", "TorchRunner.open"),
                 unavailable=lazy("runtime.torch_runner", "torch_unavailable"),
                 needs_torch=True, resident=True, precisions=CUDA_TF32, description="TorchScript, from model.torchscript.pt"))
