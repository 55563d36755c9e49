"""GPU performance profiles: the iteration-time model's coefficients, as data.

Iteration time t = a + b*prefill_tokens + c*decode_requests + d*kv_tokens_read. Coefficients are
stored in integer picoseconds so that the simulator's clock is exact integer arithmetic: summing k
identical decode steps analytically gives bit-for-bit the same time as stepping k times.

Sources (Llama-3-8B, fp16, one GPU per replica):
- A100-80GB and H100-80GB: vLLM 0.8 profiling anchors (a, b, c, ~467k KV tokens on A100) as
  collected in DESIGN.md §2.
- A10-24GB (the Glia paper's GPU, profiled there with Vidur): batch-1 decode ~31 ms, an 8k-token
  prefill ~1.5 s, 2240 blocks of 16 tokens. b = (1.5 s - 31 ms) / 8192 = 179 us/token; c is set to
  b x (18.2 / 47.8), the decode/prefill per-token ratio measured on A100; a = 31 ms - c.
- d, the cost of reading one token's KV cache in attention, for every GPU: `KV_READ` below, i.e.
  KV bytes per token / (peak HBM bandwidth x the share of it paged attention reaches). It was
  stored as 218 (picoseconds) for the A10 until issue 16: 128 KiB / 600 GB/s is 218
  *nanoseconds*, so the term was 1000x too small (A100 and H100 had the same slip).
"""
from __future__ import annotations

from dataclasses import dataclass

PS_PER_S = 10**12


@dataclass(frozen=True)
class GpuProfile:
    model: str
    gpu: str
    a_ps: int          # fixed cost per iteration (weights read, kernel launches)
    b_ps: int          # per prefill token
    c_ps: int          # per decoding request
    d_ps: int          # per KV-cache token read by attention
    num_blocks: int    # KV-cache blocks that fit beside the weights
    block_size: int = 16

    def iteration_ps(self, prefill_tokens: int, decode_requests: int, kv_tokens: int) -> int:
        return (self.a_ps + self.b_ps * prefill_tokens + self.c_ps * decode_requests
                + self.d_ps * kv_tokens)


def _us(x: float) -> int:
    return round(x * 10**6)


# Llama-3-8B KV cache per token: K and V x 32 layers x 8 KV heads (GQA) x 128 dims x 2 bytes (fp16)
KV_BYTES_PER_TOKEN = 2 * 32 * 8 * 128 * 2          # 131,072 B = 128 KiB

# Peak HBM bandwidth (GB/s, vendor data sheets): A10 600, A100-80GB SXM 2039, H100-80GB SXM 3350.
PEAK_BANDWIDTH_GBPS = {"a10": 600.0, "a100": 2039.0, "h100": 3350.0}

# The share of peak bandwidth a paged-attention decode kernel reaches. Calibrated on the issue-16
# calibration set (Vidur's results at 2048 and 4096 blocks, ../shared/data/vidur_reference/,
# seeds 0-1: see docs/fidelity.md and `benchmarks/bench_fidelity.py --calibrate`); within the
# 50-80 % that published paged-attention kernels reach on these GPUs.
ATTENTION_BANDWIDTH_SHARE = 0.6


def kv_read_ps(gpu: str, share: float = ATTENTION_BANDWIDTH_SHARE) -> int:
    """Picoseconds to read one token's KV cache on `gpu` (bytes / (GB/s) = ns; x1000 = ps)."""
    return round(KV_BYTES_PER_TOKEN / (PEAK_BANDWIDTH_GBPS[gpu] * share) * 1000)


KV_READ = {gpu: kv_read_ps(gpu) for gpu in PEAK_BANDWIDTH_GBPS}


PROFILES: dict[str, GpuProfile] = {
    "llama3-8b/a10": GpuProfile("llama3-8b", "a10", a_ps=_us(30_932), b_ps=_us(179.3),
                                c_ps=_us(68.2), d_ps=KV_READ["a10"],
                                num_blocks=2240),
    "llama3-8b/a100": GpuProfile("llama3-8b", "a100", a_ps=_us(16_400), b_ps=_us(47.8),
                                 c_ps=_us(18.2), d_ps=KV_READ["a100"],
                                 num_blocks=29_187),
    "llama3-8b/h100": GpuProfile("llama3-8b", "h100", a_ps=_us(5_750), b_ps=_us(17.3),
                                 c_ps=_us(6.0), d_ps=KV_READ["h100"],
                                 num_blocks=29_187),
}


def get_profile(name: str) -> GpuProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown GPU profile {name!r} (known: {', '.join(PROFILES)})") from None
