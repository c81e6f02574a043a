"""ort-cuda-graph: an ONNX file through ONNX Runtime's CUDA provider with its runs replayed from CUDA
graphs (ort_graph.py): batch-1 latency without a kernel launch per node, for a tutorial model's export
and a user's own file alike. Its own verify row, so it is chosen (bench, --backend auto) only where
it passed and is faster than ort-cuda."""
from . import ORT_CUDA, Backend, lazy, register

register(Backend(name="ort-cuda-graph", artifact="onnx", devices=("cuda",),
                 open=lazy("runtime.ort_graph", "OrtGraphRunner.open"),
                 static=lazy("runtime.cuda_placement", "graph_static_summary"), traced_by="ort-cuda",
                 decodes_growing_cache=False, **ORT_CUDA))
