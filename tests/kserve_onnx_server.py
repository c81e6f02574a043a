"""KServe's own Python model server (the `kserve` package) serving an ONNX file through ONNX Runtime:
the deployment a KServe user writes for a custom predictor, here so that `ptx verify URL` is tested
against a server ptx did not write. It imports neither ptx nor torch.

    python tests/kserve_onnx_server.py MODEL.onnx --model_name NAME --http_port P
"""
from __future__ import annotations

import argparse

import kserve
import uvicorn
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse
from kserve.utils.utils import from_np_dtype, generate_uuid

# ONNX Runtime's element types as the Open Inference Protocol names them.
DATATYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16", "tensor(int64)": "INT64",
             "tensor(int32)": "INT32", "tensor(int8)": "INT8", "tensor(uint8)": "UINT8", "tensor(bool)": "BOOL"}


def _described(values) -> list[dict]:
    return [{"name": v.name, "datatype": DATATYPES.get(v.type, v.type),
             "shape": [d if isinstance(d, int) else -1 for d in v.shape]} for v in values]


class OnnxModel(kserve.Model):
    def __init__(self, name: str, path: str):
        super().__init__(name)
        self.path = path
        self.session = None
        self.load()

    def load(self) -> bool:
        self.session = ort.InferenceSession(self.path, providers=["CPUExecutionProvider"])
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict]:
        return _described(self.session.get_inputs())

    def get_output_types(self) -> list[dict]:
        return _described(self.session.get_outputs())

    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        feeds = {tensor.name: tensor.as_numpy() for tensor in payload.inputs}
        names = [o.name for o in self.session.get_outputs()]
        outputs = []
        for name, value in zip(names, self.session.run(names, feeds)):
            out = InferOutput(name=name, shape=list(value.shape), datatype=from_np_dtype(value.dtype))
            out.set_data_from_numpy(value, binary_data=payload.use_binary_outputs)
            outputs.append(out)
        # As kserve's own predictors answer (kserve.utils.utils.get_predict_response): binary outputs
        # where the request asked for them, and an id where the request gave none.
        return InferResponse(model_name=self.name, infer_outputs=outputs, response_id=payload.id or generate_uuid(),
                             use_binary_outputs=payload.use_binary_outputs)


def _on_loopback(config_class):
    """kserve 0.21 binds its REST server to 0.0.0.0 with no option to change it; a test's server
    listens on loopback only."""
    def config(*args, **kwargs):
        return config_class(*args, **{**kwargs, "host": "127.0.0.1"})
    return config


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("onnx_file")
    args, _ = parser.parse_known_args()
    uvicorn.Config = _on_loopback(uvicorn.Config)
    # REST only (the v2 route the test checks): kserve's gRPC server would listen on every interface.
    kserve.ModelServer(http_port=args.http_port, enable_grpc=False).start([OnnxModel(args.model_name, args.onnx_file)])
