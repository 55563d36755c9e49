"""How chat_trace.csv was made (run it to make it again; the same seed gives the same file).

A synthetic "internal chat service" trace standing in for one you would export from your own
serving logs: 20 minutes of bursty arrivals (a gamma process whose rate drifts between 1.5 and 4
requests/s), log-normal prompt and output lengths with a long tail. Format: Vidur's CSV header
(arrived_at, num_prefill_tokens, num_decode_tokens), which `sim.load_trace` reads.
"""
import csv
import math
import random
from pathlib import Path


def make(path: Path, seed: int = 7, duration_s: float = 1200.0) -> int:
    rng = random.Random(seed)
    t, rows = 0.0, []
    while True:
        rate = 2.75 + 1.25 * math.sin(2 * math.pi * t / 400.0)
        t += rng.gammavariate(0.25, 4.0 / rate)          # shape < 1: bursts
        if t >= duration_s:
            break
        prompt = min(7000, max(8, int(rng.lognormvariate(6.0, 1.1))))
        output = min(3000, max(4, int(rng.lognormvariate(5.3, 0.9))))
        rows.append((round(t, 3), prompt, output))
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arrived_at", "num_prefill_tokens", "num_decode_tokens"])
        writer.writerows(rows)
    return len(rows)


if __name__ == "__main__":
    print(make(Path(__file__).with_name("chat_trace.csv")), "requests")
