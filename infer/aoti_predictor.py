"""aoti: a torch.export + AOTInductor package (model.pt2) through torch._inductor.aoti_load_package.

The package holds native code compiled for one device; the Predictor refuses another device (it
cannot be moved like a module), and reads the ptx metadata that export put inside the package.
"""
from __future__ import annotations

from pathlib import Path

from ptx.contract.names import FULL_PRECISION
from ptx.errors import ArtifactError, MissingArtifactError, first_line

from .predictor import Predictor, artifact_info
from .torch_predictor import TorchPredictor, check_precision, torch_device


class AotiPredictor(TorchPredictor):
    """On CUDA the package's cuBLAS/cuDNN calls follow the TF32 setting of each call (f32: off);
    its Triton kernels were compiled with TF32 off (export compiles under ptx.cuda_math.fp32_math)."""

    backend = "aoti"

    def __init__(self, path: str | Path, device: str = "cpu", precision: str = FULL_PRECISION):
        from ptx.export.formats.pt2 import load

        self.torch_device = torch_device(device)  # a bad device is the user's error, not the file's
        self.device = self.torch_device.type
        self.precision = check_precision(precision, self.torch_device)
        try:
            compiled, strings, compiled_for = load(path)
        except Exception as exc:
            raise ArtifactError(f"{path}: not a loadable pt2 package ({first_line(exc)}); "
                                "re-export with `ptx export NAME --format pt2`") from None
        info = artifact_info(path, strings, missing="no ptx.* metadata in the package", export_args=" --format pt2")
        # AOTInductor names the device "cpu" or "cuda" (a device index is chosen at load time).
        if compiled_for.split(":")[0] != self.device:
            raise MissingArtifactError(f"{path} was compiled for {compiled_for or 'an unknown device'}, not "
                                       f"{self.device}: run `ptx export {info.contract.model} --format pt2 "
                                       f"--device {self.device}` (one package per device)")
        Predictor.__init__(self, info, Path(path))
        self._serve(compiled)
