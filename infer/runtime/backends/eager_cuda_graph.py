"""eager-cuda-graph: the checkpoint's nn.Module on a GPU with each batch shape replayed from a CUDA
graph (torch_graph.py); a user's TorchScript or pt2 file on the same runner. Its own verify row, so
it is chosen (bench, --backend auto) only where it passed and is faster than eager-cuda."""
from . import TORCH, Backend, lazy, register

register(Backend(name="eager-cuda-graph", artifact="checkpoint", devices=("cuda",),
                 open=lazy("runtime.torch_graph", "TorchGraphRunner.open"), reads=("checkpoint", "torchscript", "pt2"),
                 **TORCH))
