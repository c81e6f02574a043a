"""Export: checkpoint -> TorchScript and ONNX files, validated against eager before they are kept."""
