"""torchscript: model.torchscript.pt through torch.jit (torch, no Python model code)."""
from . import Backend, register


def _load(path, device):
    from ..torch_predictor import TorchScriptPredictor

    return TorchScriptPredictor(path, device=device)


def _unavailable(device):
    from ..torch_predictor import torch_unavailable

    return torch_unavailable(device)


def _bare(predictor, x):
    from ..torch_predictor import bare_module_runner

    return bare_module_runner(predictor, x, "bare torch.jit module call")


register(Backend(name="torchscript", artifact="torchscript", devices=("cpu", "cuda"), load=_load,
                 unavailable=_unavailable, bare=_bare, needs_torch=True,
                 description="TorchScript, from model.torchscript.pt"))
