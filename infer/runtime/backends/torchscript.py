"""torchscript: a TorchScript file through torch.jit (torch, no Python model code)."""
from . import TORCH, Backend, lazy, register

register(Backend(name="torchscript", artifact="torchscript", devices=("cpu", "cuda"),
                 open=lazy("runtime.torch_runner", "TorchRunner.open"), resident=True,
                 # torch.jit.load keeps one copy: 1.10x a 134 MB MLP's weights, 1.03x a 504 MB one's
                 # (scripts/backend_memory.py, Intel Xeon, 2026-11-26)
                 holds=1.1, **TORCH))
