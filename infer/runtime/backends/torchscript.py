"""torchscript: a TorchScript file through torch.jit (torch, no Python model code)."""
from . import TORCH, Backend, lazy, register

register(Backend(name="torchscript", artifact="torchscript", devices=("cpu", "cuda"),
                 open=lazy("runtime.torch_runner", "TorchRunner.open"), resident=True, **TORCH))
