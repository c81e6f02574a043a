"""eager: the checkpoint rebuilt as an nn.Module (torch); the reference every other backend meets."""
from . import Backend, register


def _load(path, device):
    from ..torch_predictor import EagerPredictor

    return EagerPredictor(path, device=device)


def _unavailable(device):
    from ..torch_predictor import torch_unavailable

    return torch_unavailable(device)


def _bare(predictor, x):
    from ..torch_predictor import bare_module_runner

    return bare_module_runner(predictor, x, "bare nn.Module call")


register(Backend(name="eager", artifact="checkpoint", devices=("cpu", "cuda"), load=_load, unavailable=_unavailable,
                 bare=_bare, needs_torch=True, description="PyTorch eager, from checkpoint.pt"))
