"""GPU performance profiles: the iteration-time model's coefficients, as data.

One iteration (a batch of `n` decoding requests and prefill chunks c_1..c_k, P = sum c_i) takes

    t = a + b * linear_tokens + c * n + d * kv_read + e * sum(c_i^2)

- a: fixed cost (weights read, kernel launches); c: per decoding request;
- b: per token through the linear layers: with `linear_knee` None, every prefill token (the
  vLLM anchors below); with a knee K, every token of the batch (prefill and decode) beyond the
  first K, below which the layers are memory-bound (Vidur's per-operator profiles have this shape);
- d: per KV-cache token read by attention (decode context and prefill prefixes), times
  (1 + decode_overhead) for the decode part when more than one request decodes (Vidur's
  attention_decode_batching_overhead_fraction);
- e: per squared prefill-chunk token (prefill attention is quadratic in the chunk); prefill
  attention (e and the prefixes' d) times (1 + prefill_overhead) when more than one request
  prefills (Vidur's attention_prefill_batching_overhead_fraction).
KV tokens read, as Vidur's predictor counts them: a decoding request also attends to the token
it decodes (+1); with `kv_granularity` g > 1 every decoding request is timed at the batch's
mean length rounded up to a multiple of g, and each prefill prefix rounded up to g (Vidur
predicts attention on a grid of KV lengths, kv_cache_prediction_granularity = 64).
Coefficients are integer picoseconds so that the simulator's clock is exact integer arithmetic:
summing k identical decode steps analytically gives bit-for-bit the same time as stepping k times.

Sources (Llama-3-8B, fp16, one GPU per replica):
- A100-80GB and H100-80GB: vLLM 0.8 profiling anchors (a, b, c, ~467k KV tokens on A100) as
  collected in DESIGN.md §2 (no knee, no prefill-attention term).
- A10-24GB (the Glia paper's GPU, profiled there with Vidur; 2240 blocks of 16 tokens): the
  linear layers from Vidur's own per-operator profile as the Glia reproduction built it (Vidur's
  A100 Llama-3-8B mlp.csv transferred per operator with the A40/A100 ratio of Vidur's Llama-2-7B
  profiles, x1.2 for A40 -> A10): 29.8 ms at 1 token, 38.4 ms at 128, 89 ms at 512, 337 ms at
  2048, 665 ms at 4096 tokens; fitted as c = 56 us per decoding request up to 128 tokens (the
  batch cap) and b = 158 us per token beyond it (within 7 % from 256 to 4096 tokens); a = 30.9 ms
  keeps batch-1 decode at Vidur's ~31 ms; e = 2.9 ns/token^2 makes an 8k-token prefill Vidur's
  ~1.5 s (a + b x 8064 = 1.305 s of linear layers, the rest attention).
- d, for every GPU: `KV_READ` below, i.e. KV bytes per token / (peak HBM bandwidth x the share of
  it paged attention reaches). It was stored as 218 (picoseconds) for the A10 until issue 16:
  128 KiB / 600 GB/s is 218 *nanoseconds*, so the term was 1000x too small (A100 and H100 had
  the same slip). See docs/fidelity.md for the calibration against Vidur.
"""
from __future__ import annotations

from dataclasses import dataclass

PS_PER_S = 10**12


@dataclass(frozen=True)
class GpuProfile:
    model: str
    gpu: str
    a_ps: int          # fixed cost per iteration (weights read, kernel launches)
    b_ps: int          # per prefill token (per batch token beyond linear_knee, when set)
    c_ps: int          # per decoding request
    d_ps: int          # per KV-cache token read by attention
    num_blocks: int    # KV-cache blocks that fit beside the weights
    block_size: int = 16
    linear_knee: int | None = None   # tokens below which the linear layers cost only a + c*n
    e_ps: int = 0                    # per squared prefill-chunk token (prefill attention)
    decode_overhead: float = 0.0     # extra share of decode attention when > 1 request decodes
    prefill_overhead: float = 0.0    # extra share of prefill attention when > 1 request prefills
    kv_granularity: int = 1          # KV lengths are timed rounded up to a multiple of this

    def kv_rounded(self, tokens: int) -> int:
        """`tokens` rounded up to the KV granularity (the profile's grid)."""
        g = self.kv_granularity
        return -(-tokens // g) * g

    def decode_kv(self, decoders: int, kv_sum: int) -> int:
        """KV tokens the decode attention of `decoders` requests is timed for, `kv_sum` tokens in
        their caches: each also attends to the token it decodes (+1); with a granularity g, every
        request is timed at the batch's mean length rounded up to a multiple of g (Vidur's
        `_get_batch_decode_attention_params`: int(mean), then up to the granularity)."""
        if self.kv_granularity == 1:
            return kv_sum + decoders
        return decoders * self.kv_rounded((kv_sum + decoders) // decoders)

    @property
    def d_decode_ps(self) -> int:
        """KV-read cost per token of a batch with more than one decoding request."""
        return round(self.d_ps * (1.0 + self.decode_overhead))

    def linear_ps(self, prefill_tokens: int, decode_requests: int) -> int:
        """a + b * linear tokens + c * decoding requests."""
        if self.linear_knee is None:
            tokens = prefill_tokens
        else:
            tokens = max(0, prefill_tokens + decode_requests - self.linear_knee)
        return self.a_ps + self.b_ps * tokens + self.c_ps * decode_requests

    def iteration_ps(self, prefill_tokens: int, decode_requests: int, kv_tokens: int) -> int:
        """The iteration's time without the two attention refinements (`attention_extra_ps`):
        linear layers and every KV token read at d."""
        return self.linear_ps(prefill_tokens, decode_requests) + self.d_ps * kv_tokens

    def attention_extra_ps(self, chunk_sq: int, decode_requests: int, decode_kv: int,
                           prefills: int = 0, prefill_kv: int = 0) -> int:
        """Prefill attention (e * sum of squared chunks) and the batching overheads: decode
        attention (d * decode_kv) x decode_overhead when more than one request decodes, prefill
        attention (e * chunk_sq + d * prefill_kv) x prefill_overhead when more than one prefills
        (Vidur's attention_{decode,prefill}_batching_overhead_fraction)."""
        extra = self.e_ps * chunk_sq
        if prefills > 1 and self.prefill_overhead:
            extra += round((extra + self.d_ps * prefill_kv) * self.prefill_overhead)
        if decode_requests > 1:
            extra += (self.d_decode_ps - self.d_ps) * decode_kv
        return extra


def _us(x: float) -> int:
    return round(x * 10**6)


# Llama-3-8B KV cache per token: K and V x 32 layers x 8 KV heads (GQA) x 128 dims x 2 bytes (fp16)
KV_BYTES_PER_TOKEN = 2 * 32 * 8 * 128 * 2          # 131,072 B = 128 KiB

# Peak HBM bandwidth (GB/s, vendor data sheets): A10 600, A100-80GB SXM 2039, H100-80GB SXM 3350.
PEAK_BANDWIDTH_GBPS = {"a10": 600.0, "a100": 2039.0, "h100": 3350.0}

# The share of peak bandwidth a paged-attention decode kernel reaches. Calibrated on the issue-16
# calibration set (Vidur's results at 2048 and 4096 blocks, ../shared/data/vidur_reference/,
# seeds 0-1): see docs/fidelity.md and `benchmarks/bench_fidelity.py --calibrate`.
ATTENTION_BANDWIDTH_SHARE = 0.55


def kv_read_ps(gpu: str, share: float = ATTENTION_BANDWIDTH_SHARE) -> int:
    """Picoseconds to read one token's KV cache on `gpu` (bytes / (GB/s) = ns; x1000 = ps)."""
    return round(KV_BYTES_PER_TOKEN / (PEAK_BANDWIDTH_GBPS[gpu] * share) * 1000)


KV_READ = {gpu: kv_read_ps(gpu) for gpu in PEAK_BANDWIDTH_GBPS}

# Vidur's attention_decode_batching_overhead_fraction and attention_prefill_batching_overhead_
# fraction (vidur/config/config.py, both 0.1; applied to GQA models such as Llama-3-8B), and its
# kv_cache_prediction_granularity (64: attention is predicted on a grid of KV lengths, a batch's
# mean decode length and each prefill's prefix rounded up to it;
# vidur/execution_time_predictor/sklearn_execution_time_predictor.py)
VIDUR_DECODE_OVERHEAD = 0.1
VIDUR_PREFILL_OVERHEAD = 0.1
VIDUR_KV_GRANULARITY = 64

PROFILES: dict[str, GpuProfile] = {
    "llama3-8b/a10": GpuProfile("llama3-8b", "a10", a_ps=_us(30_900), b_ps=_us(158),
                                c_ps=_us(56), d_ps=KV_READ["a10"], num_blocks=2240,
                                linear_knee=128, e_ps=2900,
                                decode_overhead=VIDUR_DECODE_OVERHEAD,
                                prefill_overhead=VIDUR_PREFILL_OVERHEAD,
                                kv_granularity=VIDUR_KV_GRANULARITY),
    "llama3-8b/a100": GpuProfile("llama3-8b", "a100", a_ps=_us(16_400), b_ps=_us(47.8),
                                 c_ps=_us(18.2), d_ps=KV_READ["a100"], num_blocks=29_187),
    "llama3-8b/h100": GpuProfile("llama3-8b", "h100", a_ps=_us(5_750), b_ps=_us(17.3),
                                 c_ps=_us(6.0), d_ps=KV_READ["h100"], num_blocks=29_187),
}


def get_profile(name: str) -> GpuProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown GPU profile {name!r} (known: {', '.join(PROFILES)})") from None
