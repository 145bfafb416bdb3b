"""khmer-correct runtime: torch-free text pipeline, engines, batcher and gRPC serving."""
