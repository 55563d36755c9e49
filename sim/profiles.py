"""GPU performance profiles: the iteration-time model's coefficients, as data.

Iteration time t = a + b*prefill_tokens + c*decode_requests + d*kv_tokens_read. Coefficients are
stored in integer picoseconds so that the simulator's clock is exact integer arithmetic: summing k
identical decode steps analytically gives bit-for-bit the same time as stepping k times.

Sources (Llama-3-8B, fp16, one GPU per replica):
- A100-80GB and H100-80GB: vLLM 0.8 profiling anchors (a, b, c, ~467k KV tokens on A100) as
  collected in DESIGN.md §2; d from KV bytes per token (128 KiB, GQA) over HBM bandwidth
  (A100 2.0 TB/s -> 66 ps/token, H100 3.35 TB/s -> 39 ps/token).
- A10-24GB (the Glia paper's GPU, profiled there with Vidur): batch-1 decode ~31 ms, an 8k-token
  prefill ~1.5 s, 2240 blocks of 16 tokens. b = (1.5 s - 31 ms) / 8192 = 179 us/token; c is set to
  b x (18.2 / 47.8), the decode/prefill per-token ratio measured on A100; a = 31 ms - c;
  d = 128 KiB / 600 GB/s = 218 ps/token.
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


PROFILES: dict[str, GpuProfile] = {
    "llama3-8b/a10": GpuProfile("llama3-8b", "a10", a_ps=_us(30_932), b_ps=_us(179.3),
                                c_ps=_us(68.2), d_ps=218, num_blocks=2240),
    "llama3-8b/a100": GpuProfile("llama3-8b", "a100", a_ps=_us(16_400), b_ps=_us(47.8),
                                 c_ps=_us(18.2), d_ps=66, num_blocks=29_187),
    "llama3-8b/h100": GpuProfile("llama3-8b", "h100", a_ps=_us(5_750), b_ps=_us(17.3),
                                 c_ps=_us(6.0), d_ps=39, num_blocks=29_187),
}


def get_profile(name: str) -> GpuProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown GPU profile {name!r} (known: {', '.join(PROFILES)})") from None
