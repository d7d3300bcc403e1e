"""What the per-request access log costs: single sequences at 64 connections, one server with the
default log level (info: one access line per request) against one at warning (no access lines).

    python -m bench.access_log_cost [--rounds 4] [--seconds 4]

Both servers run at once on the same machine; each round measures one, then the other (the order
alternating), the idle one paused (SIGSTOP). Prints one markdown table: req/s of each, and their
ratio within each round, as median (min-max) over rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import orjson

from bench.loadgen import build_request, run_load
from bench.serve import Peer, free_port, launch, wait_ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    single = np.cumsum(rng.normal(size=(1, 20, 2)), axis=1).astype(np.float32)
    body = orjson.dumps({"sequences": single}, option=orjson.OPT_SERIALIZE_NUMPY)
    rates: dict[str, list[float]] = {"info": [], "warning": []}
    with tempfile.TemporaryDirectory() as tmp:
        peers: dict[str, Peer] = {}
        try:
            for key, level in (("service", "info"), ("service2", "warning")):
                port = free_port()
                env = {"JEPA_DATA_DIR": f"{tmp}/{level}", "JEPA_BOOTSTRAP_EPOCHS": "5", "JEPA_LOG_LEVEL": level}
                cli = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
                peers[level] = launch(key, cli, env, port, "/ready", Path(tmp))
                wait_ready(peers[level])
            for round_ in range(args.rounds):
                order = list(rates) if round_ % 2 == 0 else list(reversed(rates))
                for level in order:
                    other = peers[next(name for name in rates if name != level)]
                    other.pause()  # its idle threads take nothing from this measurement
                    try:
                        port = peers[level].port
                        request = build_request("/encode", body, "application/json", "application/json", port)
                        rates[level].append(run_load(port, request, 64, args.seconds, 1.0).per_second)
                    finally:
                        other.resume()
        finally:
            for peer in peers.values():
                peer.stop()

    def cell(values: list[float], fmt: str) -> str:
        return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})"

    ratios = [on / off for on, off in zip(rates["info"], rates["warning"], strict=True)]
    print("| access log | single sequences, 64 conn. (req/s) | with log / without |")
    print("|---|---|---|")
    print(f"| on (JEPA_LOG_LEVEL=info, the default) | {cell(rates['info'], ',.0f')} | {cell(ratios, '.2f')} |")
    print(f"| off (JEPA_LOG_LEVEL=warning) | {cell(rates['warning'], ',.0f')} | 1.00 |")
    print(f"\n{args.rounds} rounds of {args.seconds:g} s per server, alternating; load generator on the same machine.")


if __name__ == "__main__":
    main()
