"""Per-request timing of forward passes, for the X-Queue-Time and X-Inference-Time headers.

The HTTP layer sets `request_timing` to a fresh RequestTiming for each request; the micro-batcher
records into it when each of the request's batched pieces comes back. A ContextVar reaches it
because the batcher's `submit` awaits in the request's own context (tasks that asyncio.gather
makes copy that context, and the copy still points at the same RequestTiming).

A request runs as one piece when its sequences fit one forward pass and one length bucket (most
requests). One that is cut into several pieces submits them together, and the one inference
thread runs them one after another, so:
- queue_s is the longest any of its pieces waited from submission until its batch started on the
  inference thread (a later piece's wait includes the request's own earlier pieces' passes);
- inference_s is the sum, over its pieces, of the pass that ran each (padding the batch
  included); a pass shared with other requests counts whole for each of them.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class RequestTiming:
    queue_s: float = 0.0
    inference_s: float = 0.0


request_timing: ContextVar[RequestTiming | None] = ContextVar("request_timing", default=None)


def record(queue_s: float, inference_s: float) -> None:
    """Add one piece's wait and pass to the current request's timing, if it is being timed."""
    timing = request_timing.get()
    if timing is not None:
        timing.queue_s = max(timing.queue_s, queue_s)
        timing.inference_s += inference_s
