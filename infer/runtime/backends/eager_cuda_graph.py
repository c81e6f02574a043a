"""eager-cuda-graph: the checkpoint's nn.Module on a GPU with each batch shape replayed from a CUDA
graph (torch_graph.py); a user's TorchScript or pt2 file on the same runner. Its own verify row, so
it is chosen (bench, --backend auto) only where it passed and is faster than eager-cuda."""
from . import TORCH, Backend, lazy, register

register(Backend(name="eager-cuda-graph", artifact="checkpoint", devices=("cuda",),
                 open=lazy("runtime.torch_graph", "TorchGraphRunner.open"), reads=("checkpoint", "torchscript", "pt2"),
                 # on the host, what the torch backend that reads the same file holds, the most of them (aoti's
                 # 2.7x: a pt2 package); not measured on a GPU
                 holds=2.7, **TORCH))
