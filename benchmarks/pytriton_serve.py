"""The PyTriton peer: the runtime's own batch path (`runtime.corrector.Corrector.correct` on the
artifact's onnxruntime engine) behind Triton's dynamic batcher, served over KServe v2 gRPC by
the tritonserver that nvidia-pytriton bundles. Started by benchmarks/triton_peers.py in its
numpy < 2 environment (see `triton_peers.pytriton_python`); stops on SIGINT or SIGTERM.

    .venvs/pytriton/bin/python -m benchmarks.pytriton_serve --artifact DIR --grpc-port P ...

The model is `khmer-correct` with a BYTES input `TEXT` and output `CORRECTED` of shape
[batch, 1], as our server answers them; each Triton batch of texts goes through
`Corrector.correct` whole, which cuts it into the same model pieces as `kmcorrect serve` and
decodes them `--max-batch-size` at a time, shortest first.
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from runtime.config import ServeConfig
from runtime.corrector import Corrector


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", required=True)
    p.add_argument("--variant", default="opt")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--decoding", default="aggressive")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-queue-delay-us", type=int, default=ServeConfig.max_queue_delay_us)
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--metrics-port", type=int, required=True)
    p.add_argument("--workspace", type=Path, required=True, help="PyTriton's sockets and files")
    args = p.parse_args(argv)

    # Corrector, not runtime.server: our protobuf descriptors clash with tritonclient's here.
    corrector = Corrector.load(
        args.artifact, variant=args.variant, device=args.device, threads=args.threads or None
    )

    @batch
    def infer(TEXT: np.ndarray) -> dict[str, np.ndarray]:  # named after the input tensor
        texts = [row[0].decode("utf-8") for row in TEXT]
        corrections = corrector.correct(
            texts, decoding=args.decoding, batch_size=args.max_batch_size
        )
        return {"CORRECTED": np.array([[c.text.encode()] for c in corrections], dtype=np.object_)}

    config = TritonConfig(
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        http_address="127.0.0.1",
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        exit_timeout_secs=10,
    )
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # drain as on Ctrl-C
    with Triton(config=config, workspace=args.workspace) as triton:
        triton.bind(
            model_name=ServeConfig.model_name,
            infer_func=infer,
            inputs=[Tensor(name="TEXT", dtype=bytes, shape=(1,))],
            outputs=[Tensor(name="CORRECTED", dtype=bytes, shape=(1,))],
            config=ModelConfig(
                max_batch_size=args.max_batch_size,
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us),
            ),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
