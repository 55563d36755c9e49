"""Rebuild `linear_llama3_8b_a10.csv`: the A10 Llama-3-8B linear-layer time per iteration as
Vidur's predictor sees it in the Glia reproduction (issue 16, docs/fidelity.md).

Vidur times the non-attention operators of a batch from its per-operator profile at the batch's
token count rounded up to a multiple of 8 (`Batch._total_num_tokens_rounded`) and sums, per layer,
attn_pre_proj, attn_post_proj, attn_rope, input_layernorm, mlp_up_proj, mlp_down_proj, mlp_act,
post_attention_layernorm and add (`vidur/entities/execution_time.py`), times 32 layers. No A10
profile ships with Vidur; the Glia reproduction (ronyw7/glia-repro, scripts/make_a10_profile.py)
made one from the A100 Llama-3-8B profile: each operator times the A40/A100 ratio of Vidur's
Llama-2-7B profiles, looked up by token count (median ratio per log2 bin, smoothed), times 1.2 for
A40 -> A10. This script repeats that transfer on the profiles' medians (our code) and writes the
total in microseconds at every profiled token count.

Usage: python sim/data/vidur_a10_profile/make_linear_table.py /path/to/vidur/checkout
(Vidur's data/profiling/compute/{a100,a40}/meta-llama/{Llama-2-7b-hf,Meta-Llama-3-8B}/mlp.csv).
"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd

OPS = ["attn_pre_proj", "attn_post_proj", "attn_rope", "input_layernorm", "mlp_up_proj",
       "mlp_down_proj", "mlp_act", "post_attention_layernorm", "add"]
LAYERS = 32            # Llama-3-8B
A40_TO_A10 = 1.2       # the Glia reproduction's hardware factor (bandwidth 696/600, FLOPS 150/125)
BINS = 40              # ratio curve: median per log2(tokens) bin, rolling median of 3


def ratio_curve(tokens, t_a100, t_a40):
    df = pd.DataFrame({"w": np.log2(np.maximum(tokens, 1)), "r": t_a40 / t_a100})
    df = df[np.isfinite(df.r) & (df.r > 0)]
    edges = np.linspace(df.w.min(), df.w.max() + 1e-9, BINS + 1)
    df["b"] = np.digitize(df.w, edges)
    g = df.groupby("b").agg(w=("w", "median"), r=("r", "median")).dropna()
    g["r"] = g.r.rolling(3, center=True, min_periods=1).median()
    return g.w.values, g.r.values


def main(vidur: str) -> None:
    prof = Path(vidur) / "data" / "profiling" / "compute"
    def load(gpu, model):
        df = pd.read_csv(prof / gpu / "meta-llama" / model / "mlp.csv")
        return df[df.num_tensor_parallel_workers == 1]
    src = load("a100", "Llama-2-7b-hf").merge(load("a40", "Llama-2-7b-hf"), on="num_tokens",
                                              suffixes=("_a100", "_a40"))
    target = load("a100", "Meta-Llama-3-8B").drop_duplicates("num_tokens").sort_values("num_tokens")
    total = np.zeros(len(target))
    for op in OPS:
        col = f"time_stats.{op}.median"
        x, y = ratio_curve(src.num_tokens.values, src[col + "_a100"].values,
                           src[col + "_a40"].values)
        ratio = np.interp(np.log2(np.maximum(target.num_tokens.values, 1)), x, y) * A40_TO_A10
        total += target[col].values * ratio
    out = pd.DataFrame({"num_tokens": target.num_tokens.values,
                        "linear_us": np.round(total * LAYERS * 1000).astype(int)})
    path = Path(__file__).with_name("linear_llama3_8b_a10.csv")
    out.to_csv(path, index=False)
    print(f"wrote {path} ({len(out)} rows)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
