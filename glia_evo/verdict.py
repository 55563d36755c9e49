"""Honest results: what the best candidate's held-out numbers say, next to the shipped baselines.

A search's best is chosen on its training split, so its train fitness flatters it. The held-out
report (`glia-evo report`, or at the end of a run) evaluates it on a split never used for
selection, beside every shipped baseline; `verdict()` turns that report into plain sentences:
the best's train and held-out fitness, the best shipped baseline's and the reference's, and a
warning when the search did not beat a baseline, is worse than the reference, or loses much of
its fitness from train to held-out. `run`'s last lines, `status`, `report`, the held-out
report's markdown and the export header all show the same sentences.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .run_folder import RunFolder

DROP_WARNING = 0.10        # a held-out fitness more than 10 % below the train fitness


def _ok(row) -> bool:
    f = row.get("fitness")
    return row.get("status") == "ok" and isinstance(f, (int, float)) and math.isfinite(f) \
        and f > 0


def verdict(report: dict, train_split: str | None = None) -> dict:
    """{"best_id", "split", "train", "heldout", "reference", "best_baseline",
    "best_baseline_fitness", "lines", "warnings"} from a held-out report (heldout.json)."""
    rows = report.get("rows") or []
    split = report.get("split", "?")
    best = rows[0] if rows else {}
    train = (report.get("best") or {}).get("train_fitness")
    ref_name = report.get("reference", "the reference")
    baselines = [r for r in rows[1:] if _ok(r)]
    top = max(baselines, key=lambda r: r["fitness"], default=None)
    ref = next((r for r in baselines if r["policy"] == ref_name), None)
    ref_fit = ref["fitness"] if ref else 1.0       # fitness is relative to the reference
    held = best.get("fitness") if _ok(best) else None
    best_id = (report.get("best") or {}).get("id", "?")
    on_train = f" on '{train_split}'" if train_split else " on its training split"
    out = {"best_id": best_id, "split": split, "train": train, "heldout": held,
           "reference": ref_name, "best_baseline": top["policy"] if top else None,
           "best_baseline_fitness": top["fitness"] if top else None, "warnings": []}
    parts = []
    if train is not None:
        parts.append(f"{train:.4f}{on_train}")
    parts.append(f"{held:.4f} on held-out '{split}'" if held is not None else
                 f"{best.get('status', 'not evaluated')} on held-out '{split}'")
    line = f"held-out: best {best_id} " + " -> ".join(parts)
    if top is not None:
        line += f"; best shipped baseline {top['policy']} {top['fitness']:.4f}"
    if top is None or top["policy"] != ref_name:
        line += f"; reference {ref_name} {ref_fit:.4f}"
    if not report.get("baselines", True):
        line += " (only the reference was evaluated: `glia-evo report DIR` compares all)"
    warn = out["warnings"]
    if held is None:
        warn.append(f"the best candidate did not run correctly on the held-out '{split}' split "
                    f"({best.get('status', '?')}: {best.get('error') or 'no result'}); do not "
                    f"deploy it")
    else:
        if top is not None and held < top["fitness"] and top["policy"] != ref_name:
            warn.append(f"the search did not beat the shipped baseline {top['policy']}: "
                        f"{held:.4f} vs {top['fitness']:.4f} on the held-out '{split}' split; "
                        f"{top['policy']} is the better policy to deploy")
        if held < ref_fit:
            warn.append(f"the best candidate is worse than the reference {ref_name} on the "
                        f"held-out '{split}' split ({held:.4f} < {ref_fit:.4f})")
        if train and train > 0 and held < train * (1 - DROP_WARNING):
            warn.append(f"fitness drops from {train:.4f}{on_train} to {held:.4f} on held-out "
                        f"'{split}' ({100 * (held / train - 1):+.0f}%): the best fits its "
                        f"training scenarios better than new ones")
    out["lines"] = [line] + [f"warning: {w}" for w in warn]
    return out


def read_report(run_dir: Path) -> dict | None:
    """The run's last held-out report (report/heldout.json), or None."""
    try:
        data = json.loads((RunFolder(run_dir).heldout_json).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("rows") else None


def for_candidate(run_dir: Path, cand_id: str, train_split: str | None = None) -> dict | None:
    """The verdict of the run's held-out report when it is about `cand_id`, else None."""
    report = read_report(run_dir)
    if report is None or (report.get("best") or {}).get("id") != cand_id:
        return None
    return verdict(report, train_split)
