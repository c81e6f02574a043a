"""aoti: a torch.export + AOTInductor package (model.pt2) through torch._inductor.aoti_load_package (torch,
no Python model code). The package runs on the device it was compiled for."""
from . import TORCH, Backend, lazy, register

register(Backend(name="aoti", artifact="pt2", devices=("cpu", "cuda"),
                 open=lazy("runtime.torch_runner", "TorchRunner.open"),
                 # the package's weights and the compiled library's constants: 2.63x a 135 MB MLP's package
                 # (scripts/backend_memory.py, Intel Xeon, 2026-11-26; larger ones take minutes to compile)
                 holds=2.7, **TORCH))
