"""aoti: a torch.export + AOTInductor package (model.pt2) through torch._inductor.aoti_load_package (torch,
no Python model code). The package runs on the device it was compiled for."""
from . import TORCH, Backend, lazy, register

register(Backend(name="aoti", artifact="pt2", devices=("cpu", "cuda"),
                 open=lazy("runtime.torch_runner", "TorchRunner.open"), **TORCH))
