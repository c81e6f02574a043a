"""eager: the checkpoint rebuilt as an nn.Module (torch); the reference every other backend meets."""
from . import TORCH, Backend, lazy, register

register(Backend(name="eager", artifact="checkpoint", devices=("cpu", "cuda"),
                 open=lazy("runtime.torch_runner", "TorchRunner.open"), reads=("checkpoint", "module"),
                 # a run's checkpoint: torch.load's state dict beside the module built from it, 1x the weights
                 # each (not measured: tutorial checkpoints are a few MB, where the process's start is the
                 # cost; a live nn.Module is held already, and no file is planned for it)
                 resident=True, holds=2.0, **TORCH))
