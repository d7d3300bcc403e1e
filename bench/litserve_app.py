"""The LitServe peer of bench/serve.py: the same checkpoint and traced forward pass as the service,
served by LitServe (https://github.com/Lightning-AI/LitServe) with its dynamic batching.

    python -m bench.litserve_app --checkpoint path/to/version/dir --port 8001 [--workers 1]

Tuned as LitServe recommends for a small, fast model: requests from several clients are
collected for at most `--batch-timeout` seconds (or `--max-batch-size` requests) and go through
one forward pass per sequence length (the traced forward takes equal lengths, as in the service;
long batches are cut at the service's 8,192 steps), one torch thread per inference worker, the
response encoded with orjson in the inference worker, and no access log (`log_level="warning"`).
`--workers N` runs N inference workers and N API server processes (LitServe's default pairing).
The request is the service's JSON shape, `{"sequences": [[[...]]]}`, equal lengths or not; the
answer is `{"dim": R, "embeddings": [[...]]}`. `pip install -e '.[bench]'` brings LitServe.
"""

from __future__ import annotations

import argparse
from typing import Any

import litserve as ls
import numpy as np
import orjson
import torch
from starlette.responses import Response

from jepa_model import load_checkpoint
from jepa_model.serving import traced_forwards

MAX_STEPS = 8_192  # sequences x length per forward pass, as the service's JEPA_MICRO_BATCH_STEPS


class EncodeAPI(ls.LitAPI):
    def __init__(self, checkpoint: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.checkpoint = checkpoint

    def setup(self, device: str) -> None:
        torch.set_num_threads(1)  # what the service gives its inference thread
        self.encode = traced_forwards(load_checkpoint(self.checkpoint).model)["target"]

    def decode_request(self, request) -> list[np.ndarray]:  # unannotated: LitServe then reads the body as JSON
        """{"sequences": [N][T][D]} -> pieces of equal length: one (N, T, D) array, or (1, T_i, D) each."""
        sequences = request["sequences"]
        try:
            return [np.asarray(sequences, dtype=np.float32)]
        except ValueError:  # lengths differ
            return [np.asarray(s, dtype=np.float32)[None] for s in sequences]

    def batch(self, inputs: list[list[np.ndarray]]) -> tuple[list[list[np.ndarray]], dict[int, list[tuple[int, int]]]]:
        """Every request's pieces, grouped by sequence length: {T: [(request, piece), ...]}."""
        groups: dict[int, list[tuple[int, int]]] = {}
        for i, pieces in enumerate(inputs):
            for j, x in enumerate(pieces):
                groups.setdefault(x.shape[1], []).append((i, j))
        return inputs, groups

    def predict(self, x: tuple[list[list[np.ndarray]], dict[int, list[tuple[int, int]]]]) -> list[np.ndarray]:
        inputs, groups = x
        outputs: list[list[Any]] = [[None] * len(pieces) for pieces in inputs]
        with torch.inference_mode():
            for length, members in groups.items():
                stacked = np.concatenate([inputs[i][j] for i, j in members])
                step = max(1, MAX_STEPS // max(length, 1))
                z = np.concatenate(
                    [self.encode(torch.from_numpy(stacked[s : s + step])).numpy() for s in range(0, len(stacked), step)]
                )
                start = 0
                for i, j in members:
                    n = len(inputs[i][j])
                    outputs[i][j] = z[start : start + n]
                    start += n
        return [np.concatenate(pieces) for pieces in outputs]

    def unbatch(self, output: list[np.ndarray]) -> list[np.ndarray]:
        return output

    def encode_response(self, output: np.ndarray) -> Response:
        body = orjson.dumps({"dim": output.shape[1], "embeddings": output}, option=orjson.OPT_SERIALIZE_NUMPY)
        return Response(body, media_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint version directory")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=1, help="inference workers (and API servers)")
    parser.add_argument("--max-batch-size", type=int, default=64, help="requests per forward pass, at most")
    parser.add_argument("--batch-timeout", type=float, default=0.001, help="seconds a batch waits to fill")
    parser.add_argument("--no-fast-queue", dest="fast_queue", action="store_false", help="mp queues, not ZeroMQ")
    args = parser.parse_args()

    api = EncodeAPI(
        args.checkpoint, max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout, api_path="/encode"
    )
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=args.workers, fast_queue=args.fast_queue)
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
