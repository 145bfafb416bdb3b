"""Checkpoint -> verified ONNX artifact (+ TensorRT engines); see export/README.md."""
