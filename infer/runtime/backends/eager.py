"""eager: the checkpoint rebuilt as an nn.Module (torch); the reference every other backend meets."""
from . import CUDA_TF32, Backend, lazy, register

register(Backend(name="eager", artifact="checkpoint", devices=("cpu", "cuda"),
                 open=lazy("runtime.torch_runner", "TorchRunner.open"), reads=("checkpoint", "module"),
                 unavailable=lazy("runtime.torch_runner", "torch_unavailable"),
                 needs_torch=True, resident=True, precisions=CUDA_TF32, description="PyTorch eager, from checkpoint.pt"))
