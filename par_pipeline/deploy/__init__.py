"""Where the cameras are: a checkpoint exported as ONNX graphs (`par export`) and the runtimes that answer with them
(`--runtime torch|onnxruntime|openvino` of `par predict` and `par track`)."""

RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")  # auto: torch for a checkpoint, onnxruntime for an export
