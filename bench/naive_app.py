"""The naive endpoint issue 5 measured against: pydantic lists of floats, one forward pass per
request, the default JSON response. Only bench/serve.py starts it, as its baseline.

    JEPA_NAIVE_CHECKPOINT=path/to/version/dir uvicorn bench.naive_app:app
"""

from __future__ import annotations

import os

import torch
from fastapi import FastAPI
from pydantic import BaseModel

from jepa_model import load_checkpoint

torch.set_num_threads(1)
model = load_checkpoint(os.environ["JEPA_NAIVE_CHECKPOINT"]).model.eval()
app = FastAPI()


class EncodeRequest(BaseModel):
    sequences: list[list[list[float]]]


class EncodeResponse(BaseModel):
    embeddings: list[list[float]]


@app.post("/encode", response_model=EncodeResponse)
def encode(body: EncodeRequest) -> EncodeResponse:
    with torch.inference_mode():
        z = model.encode(torch.tensor(body.sequences, dtype=torch.float32))
    return EncodeResponse(embeddings=z.tolist())
