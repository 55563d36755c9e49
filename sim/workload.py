"""Workloads: what arrives at the cluster and when.

A workload is a list of `RequestSpec` sorted by arrival. It comes from trace replay (the Azure
LLM inference CSV format or the Vidur/Glia format) or from generators (Poisson, log-normal
inter-arrivals, a time-varying rate), with lengths resampled from a trace and optionally inflated
by the Glia rule. Every generator takes an explicit seed so workloads are identical in any process.
"""
from __future__ import annotations

import csv
import functools
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"
AZURE_HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
VIDUR_HEADER = ("arrived_at", "num_prefill_tokens", "num_decode_tokens")
MAX_CONTEXT_TOKENS = 8192  # Llama-3-8B context window; the Glia traces respect it


class TraceError(ValueError):
    """A trace file that cannot be replayed; the message names the file and the row."""


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request as the workload sees it; the policy never sees `output_tokens`."""

    arrival_s: float
    prompt_tokens: int
    output_tokens: int


def _positive_int(text: str, column: str, where: str) -> int:
    try:
        value = int(float(text))
    except (ValueError, OverflowError):
        raise TraceError(f"{where}: {column} is not a number: {text!r}") from None
    if value != float(text) or value < 1:
        raise TraceError(f"{where}: {column} must be a positive integer, got {text!r}")
    return value


AZURE_TICKS_PER_S = 10**7


def _azure_ticks(text: str, where: str) -> int:
    """Parse '2023-11-16 18:17:03.9799600' into integer 100-ns ticks since the epoch (UTC).

    Integers keep all 7 fractional digits (a float epoch would lose the last one), and the
    explicit UTC zone keeps replay independent of the machine's time zone.
    """
    whole, _, frac = text.strip().partition(".")
    try:
        if frac and (not frac.isdigit() or len(frac) > 7):
            raise ValueError
        seconds = int(datetime.fromisoformat(whole).replace(tzinfo=timezone.utc).timestamp())
        return seconds * AZURE_TICKS_PER_S + int((frac or "0").ljust(7, "0"))
    except ValueError:
        raise TraceError(f"{where}: TIMESTAMP is not a date-time: {text!r}") from None


def load_trace(path: str | Path) -> list[RequestSpec]:
    """Read a trace in either CSV format (detected from the header), arrivals relative to the first.

    Rows are validated one by one; the first bad row raises `TraceError` with its row number
    (the header is row 1, as a spreadsheet shows it).
    """
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"{path}: trace file not found")
    return list(_load_trace_cached(str(path.resolve()), path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=16)
def _load_trace_cached(path: str, _mtime: int) -> tuple[RequestSpec, ...]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not a text CSV file") from None
    if not rows:
        raise TraceError(f"{path}: empty file")
    header = tuple(cell.strip() for cell in rows[0])
    if header[:3] == AZURE_HEADER:
        kind = "azure"
    elif header[:3] == VIDUR_HEADER:
        kind = "vidur"
    else:
        raise TraceError(
            f"{path}: row 1: unknown header {','.join(header)!r}; expected "
            f"{','.join(AZURE_HEADER)!r} or {','.join(VIDUR_HEADER)!r}"
        )
    out: list[tuple] = []
    for number, row in enumerate(rows[1:], start=2):
        where = f"{path}: row {number}"
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < 3:
            raise TraceError(f"{where}: expected at least 3 columns, got {len(row)}")
        if kind == "azure":
            t = _azure_ticks(row[0], where)
        else:
            try:
                t = float(row[0])
            except ValueError:
                raise TraceError(f"{where}: arrived_at is not a number: {row[0]!r}") from None
            if not math.isfinite(t) or t < 0:
                raise TraceError(f"{where}: arrived_at must be a finite time >= 0, got {row[0]!r}")
        prompt = _positive_int(row[1], header[1], where)
        output = _positive_int(row[2], header[2], where)
        out.append((t, prompt, output))
    if not out:
        raise TraceError(f"{path}: no requests in trace")
    out.sort(key=lambda r: r[0])
    t0 = out[0][0]
    scale = AZURE_TICKS_PER_S if kind == "azure" else 1
    return tuple(RequestSpec((t - t0) / scale, p, o) for t, p, o in out)


def packaged_trace(name: str) -> list[RequestSpec]:
    """A trace shipped with the package, e.g. 'glia_routing/first_turn_seed0.csv'."""
    return load_trace(DATA_DIR / name)


# --- arrival processes -------------------------------------------------------------------------

def poisson_arrivals(rate: float, duration_s: float, seed: int) -> np.ndarray:
    """Exponential inter-arrivals at `rate` req/s, arrivals in [0, duration_s)."""
    if rate <= 0:
        raise ValueError(f"arrival rate must be > 0, got {rate}")
    return _renewal(lambda rng, n: rng.exponential(1.0 / rate, n), rate, duration_s, seed)


def lognormal_arrivals(rate: float, sigma: float, duration_s: float, seed: int) -> np.ndarray:
    """Log-normal inter-arrivals with mean 1/rate and shape `sigma` (bursty for sigma > 1)."""
    if rate <= 0:
        raise ValueError(f"arrival rate must be > 0, got {rate}")
    mu = math.log(1.0 / rate) - sigma * sigma / 2.0
    return _renewal(lambda rng, n: rng.lognormal(mu, sigma, n), rate, duration_s, seed)


def _renewal(draw: Callable, rate: float, duration_s: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    gaps = draw(rng, max(16, int(rate * duration_s * 1.5) + 16))
    times = np.concatenate(([0.0], np.cumsum(gaps[:-1])))
    while times[-1] < duration_s:  # rare: bursts of long gaps; draw more deterministically
        more = draw(rng, len(gaps))
        times = np.concatenate((times, times[-1] + np.cumsum(more)))
    return times[times < duration_s]


def varying_rate_arrivals(rate_fn: Callable[[float], float], max_rate: float,
                          duration_s: float, seed: int) -> np.ndarray:
    """Non-homogeneous Poisson arrivals by thinning: rate_fn(t) <= max_rate req/s."""
    rng = np.random.default_rng(seed)
    candidates = poisson_arrivals(max_rate, duration_s, int(rng.integers(2**31)))
    keep = rng.random(len(candidates)) * max_rate < np.array([rate_fn(t) for t in candidates])
    return candidates[keep]


# --- lengths -----------------------------------------------------------------------------------

def resample_lengths(pool: Sequence[RequestSpec], n: int, seed: int) -> list[tuple[int, int]]:
    """Draw n (prompt, output) pairs with replacement from a trace, keeping pairs together."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(pool), n)
    return [(pool[i].prompt_tokens, pool[i].output_tokens) for i in idx]


def inflate(pairs: Sequence[tuple[int, int]], seed: int, fraction: float = 0.05,
            factor: int = 10, max_context: int = MAX_CONTEXT_TOKENS) -> list[tuple[int, int]]:
    """The Glia inflation rule: a `fraction` of prompts and, independently, of outputs x `factor`.

    Inflated lengths are clipped so that prompt + output stays within the model's context,
    as in the Glia traces (whose longest request is exactly 8192 tokens).
    """
    rng = np.random.default_rng(seed)
    grow_prompt = rng.random(len(pairs)) < fraction
    grow_output = rng.random(len(pairs)) < fraction
    out = []
    for (p, o), gp, go in zip(pairs, grow_prompt, grow_output):
        p = min(p * factor, max_context - 1) if gp else p
        o = o * factor if go else o
        out.append((p, max(1, min(o, max_context - p))))
    return out


def build(arrivals: Sequence[float], pairs: Sequence[tuple[int, int]]) -> list[RequestSpec]:
    """Join arrival times and (prompt, output) pairs into a workload."""
    return [RequestSpec(float(t), int(p), int(o)) for t, (p, o) in zip(arrivals, pairs)]


def scale_rate(requests: Sequence[RequestSpec], factor: float) -> list[RequestSpec]:
    """Compress (factor > 1) or stretch time so the arrival rate is multiplied by `factor`."""
    if not factor > 0:
        raise ValueError(f"rate scale must be > 0, got {factor}")
    return [RequestSpec(r.arrival_s / factor, r.prompt_tokens, r.output_tokens) for r in requests]


def window(requests: Sequence[RequestSpec], start_s: float, end_s: float) -> list[RequestSpec]:
    """The requests arriving in [start_s, end_s), re-based to start at 0."""
    return [RequestSpec(r.arrival_s - start_s, r.prompt_tokens, r.output_tokens)
            for r in requests if start_s <= r.arrival_s < end_s]


@functools.lru_cache(maxsize=1)
def _glia_base_pool() -> tuple[RequestSpec, ...]:
    """Non-inflated requests of both shipped Glia traces: the pool lengths are resampled from."""
    pool = []
    for seed in (0, 1):
        with open(DATA_DIR / "glia_routing" / f"first_turn_seed{seed}.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                if row["prefill_inflated"] == "0" and row["decode_inflated"] == "0":
                    pool.append(RequestSpec(0.0, int(row["num_prefill_tokens"]),
                                            int(row["num_decode_tokens"])))
    return tuple(pool)


def glia_workload(seed: int, rate: float = 7.5, sigma: float = 2.0,
                  duration_s: float = 1000.0) -> list[RequestSpec]:
    """The Glia routing workload: seeds 0 and 1 replay the shipped traces, others regenerate them.

    Regeneration follows the traces' own rule: log-normal inter-arrivals (sigma 2) at 7.5 req/s for
    1000 s, (prompt, output) pairs resampled from the non-inflated requests of both traces, then
    5 % of prompts and independently 5 % of outputs inflated x10.
    """
    if seed in (0, 1) and (rate, sigma, duration_s) == (7.5, 2.0, 1000.0):
        return packaged_trace(f"glia_routing/first_turn_seed{seed}.csv")
    arrivals = lognormal_arrivals(rate, sigma, duration_s, seed=1000 + seed)
    pairs = resample_lengths(_glia_base_pool(), len(arrivals), seed=2000 + seed)
    return build(arrivals, inflate(pairs, seed=3000 + seed))


# --- generated workloads for the scheduling and autoscaling problems ---------------------------

def heavy_tail_workload(seed: int, rate: float = 11.0, duration_s: float = 600.0,
                        alpha: float = 1.1, min_prompt: int = 64, max_prompt: int = 7000,
                        output_median: float = 128.0, output_sigma: float = 1.0
                        ) -> list[RequestSpec]:
    """Poisson arrivals with heavy-tailed prompts: Pareto(alpha) from `min_prompt` tokens, capped
    at `max_prompt`; outputs log-normal (median `output_median`, shape `output_sigma`), clipped so
    that prompt + output fits the context window."""
    arrivals = poisson_arrivals(rate, duration_s, seed=4000 + seed)
    rng = np.random.default_rng(5000 + seed)
    u = rng.random(len(arrivals))
    prompts = np.minimum(max_prompt, (min_prompt * (1.0 - u) ** (-1.0 / alpha)).astype(np.int64))
    outputs = rng.lognormal(math.log(output_median), output_sigma, len(arrivals)).astype(np.int64)
    outputs = np.clip(outputs, 1, MAX_CONTEXT_TOKENS - prompts)
    return build(arrivals, list(zip(prompts.tolist(), outputs.tolist())))


def diurnal_rate(t: float, day_s: float, low: float, high: float) -> float:
    """A day compressed into `day_s` seconds: a cosine from a trough at 04:00 to a peak at 16:00,
    plus a morning bump at 10:30 (a third of the swing); between `low` and `high` req/s."""
    hour = 24.0 * (t % day_s) / day_s
    shape = 0.5 * (1.0 - math.cos(2.0 * math.pi * (hour - 4.0) / 24.0))
    shape += (1.0 / 3.0) * math.exp(-0.5 * ((hour - 10.5) / 1.5) ** 2)
    return low + (high - low) * min(1.0, shape)


def step_rate(t: float, steps: Sequence[tuple[float, float]]) -> float:
    """Piecewise-constant rate: `steps` = ((start_s, req/s), ...) sorted by start."""
    rate = steps[0][1]
    for start, r in steps:
        if t < start:
            break
        rate = r
    return rate


def trace_lengths(arrivals: Sequence[float], seed: int,
                  trace: str = "azure_llm_2023/conv.csv") -> list[RequestSpec]:
    """(prompt, output) pairs resampled from a packaged trace, on the given arrival times."""
    return build(arrivals, resample_lengths(packaged_trace(trace), len(arrivals), seed=6000 + seed))


def diurnal_workload(seed: int, day_s: float = 1800.0, low: float = 1.0, high: float = 12.0,
                     trace: str = "azure_llm_2023/conv.csv") -> list[RequestSpec]:
    """A compressed day (`diurnal_rate`): Poisson arrivals thinned to the day's rate curve,
    lengths resampled from `trace` (default: the Azure conversation trace)."""
    arrivals = varying_rate_arrivals(functools.partial(diurnal_rate, day_s=day_s, low=low,
                                                       high=high), high, day_s, seed=7000 + seed)
    return trace_lengths(arrivals, seed, trace)


def step_workload(seed: int, steps: Sequence[tuple[float, float]], duration_s: float,
                  trace: str = "azure_llm_2023/conv.csv") -> list[RequestSpec]:
    """Sudden rate steps (`step_rate`): Poisson arrivals thinned, lengths resampled from `trace`."""
    top = max(r for _, r in steps)
    arrivals = varying_rate_arrivals(functools.partial(step_rate, steps=tuple(steps)), top,
                                     duration_s, seed=8000 + seed)
    return trace_lengths(arrivals, seed, trace)
