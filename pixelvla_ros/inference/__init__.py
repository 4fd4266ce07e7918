"""Inference engines behind Policy (eager, compile, cuda_graph, onnxruntime, tensorrt), the ONNX export and
the policy server with its remote client."""
