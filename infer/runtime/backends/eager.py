"""eager: the checkpoint rebuilt as an nn.Module (torch); the reference every other backend meets."""
from . import TORCH, Backend, lazy, register

register(Backend(name="eager", artifact="checkpoint", devices=("cpu", "cuda"),
                 open=lazy("runtime.torch_runner", "TorchRunner.open"), reads=("checkpoint", "module"),
                 resident=True, **TORCH))
