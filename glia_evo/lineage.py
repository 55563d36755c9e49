"""The lineage graph of a search as JSON and as one self-contained HTML page (inline SVG).

Viewable from the MLflow artifact browser or straight from the run folder: no script, no
external resource. Columns are generations, one row per candidate in order of creation within its
generation; an edge joins each candidate to its parents; colour shows fitness, grey a failure.
A child of a research turn (issue 18) shows its experiments (the tools it called) and its
conclusion; the full record is the child's `experiments.md` artifact.
"""
from __future__ import annotations

import html
import json

from .hygiene import clean

FIELDS = ("id", "parents", "fitness", "operator", "status", "island", "generation", "rationale",
          "conclusion", "experiments")


def lineage_record(cand) -> dict:
    """A candidate as the lineage page needs it: its dict without `extra`, plus, for a child
    of a research turn, its conclusion and the tools its experiments called (in order)."""
    out = cand.to_dict()
    extra = out.pop("extra", None) or {}
    if extra.get("conclusion") or extra.get("experiments"):
        exps = extra.get("experiments") if isinstance(extra.get("experiments"), list) else []
        out["conclusion"] = clean(extra.get("conclusion"), 600)
        out["experiments"] = [{"tool": clean(e.get("tool"), 40), "ok": bool(e.get("ok"))}
                              for e in exps if isinstance(e, dict)][:64]
    return out


def _research(c: dict) -> str:
    exps = c.get("experiments") or []
    if not exps and not c.get("conclusion"):
        return ""
    tools = ", ".join(e["tool"] + ("" if e.get("ok") else " (refused)") for e in exps)
    return (f"{len(exps)} experiment{'s' if len(exps) != 1 else ''}"
            f"{': ' + tools if tools else ''}. Conclusion: {c.get('conclusion') or '-'}")


def lineage_json(candidates: list[dict]) -> str:
    nodes = [{k: c.get(k) for k in FIELDS} for c in candidates]
    edges = [{"from": p, "to": c["id"]} for c in candidates for p in (c.get("parents") or [])]
    return json.dumps({"nodes": nodes, "edges": edges}, indent=1)


def _colour(c: dict, lo: float, hi: float) -> str:
    if c.get("status") != "ok" or not c.get("fitness"):
        return "#bbbbbb"
    x = 0.5 if hi <= lo else (c["fitness"] - lo) / (hi - lo)
    return f"hsl({int(10 + 110 * x)}, 70%, 45%)"


def lineage_html(candidates: list[dict], title: str = "glia-evo lineage") -> str:
    by_gen: dict[int, list[dict]] = {}
    for c in candidates:
        by_gen.setdefault(int(c.get("generation") or 0), []).append(c)
    pos = {}
    dx, dy = 120, 26
    for g, cs in sorted(by_gen.items()):
        for row, c in enumerate(cs):
            pos[c["id"]] = (40 + g * dx, 30 + row * dy)
    ok = [c["fitness"] for c in candidates if c.get("status") == "ok" and c.get("fitness")]
    lo, hi = (min(ok), max(ok)) if ok else (0.0, 1.0)
    width = 120 + dx * (max(by_gen) if by_gen else 0) + 120
    height = 60 + dy * max((len(v) for v in by_gen.values()), default=1)
    best = max(candidates, key=lambda c: c.get("fitness") or 0, default=None)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="10">']
    for c in candidates:
        for p in c.get("parents") or []:
            if p in pos and c["id"] in pos:
                (x1, y1), (x2, y2) = pos[p], pos[c["id"]]
                parts.append(f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#999" '
                             f'stroke-width="0.7"/>')
    for c in candidates:
        x, y = pos[c["id"]]
        ring = ' stroke="black" stroke-width="2"' if best is not None and c is best else (
            ' stroke="#2a5db0" stroke-width="2" stroke-dasharray="2,1"' if c.get("experiments")
            else "")
        research = _research(c)
        tip = html.escape(f"{c['id']} {c.get('operator')} {c.get('status')} "
                          f"fitness {c.get('fitness') or 0:.4f}\n{c.get('rationale') or ''}"
                          + (f"\n{research}" if research else ""))
        parts.append(f'<g><title>{tip}</title><circle cx="{x}" cy="{y}" r="7" '
                     f'fill="{_colour(c, lo, hi)}"{ring}/><text x="{x + 10}" y="{y + 3}">'
                     f'{html.escape(c["id"])} {c.get("fitness") or 0:.3f}</text></g>')
    parts.append("</svg>")
    rows = "".join(
        f"<tr><td>{html.escape(c['id'])}</td><td>{c.get('generation')}</td>"
        f"<td>{c.get('island')}</td><td>{html.escape(str(c.get('operator')))}</td>"
        f"<td>{html.escape(str(c.get('status')))}</td><td>{c.get('fitness') or 0:.4f}</td>"
        f"<td>{html.escape(', '.join(c.get('parents') or []))}</td>"
        f"<td>{html.escape(c.get('rationale') or '')}</td>"
        f"<td>{html.escape(_research(c))}</td></tr>"
        for c in sorted(candidates, key=lambda c: -(c.get("fitness") or 0)))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>body{{font-family:sans-serif}}td,th{{padding:2px 6px;"
            f"border-bottom:1px solid #ddd;font-size:12px}}</style></head><body>"
            f"<h2>{html.escape(title)}</h2><p>{len(candidates)} candidates; columns are "
            f"generations, hover a node for its change; the best is ringed, a child of a "
            f"research turn has a dashed blue ring (its experiments.md holds the whole "
            f"record).</p>"
            f"<div style='overflow:auto'>{''.join(parts)}</div>"
            f"<h3>All candidates, fittest first</h3><table><tr><th>id</th><th>gen</th>"
            f"<th>island</th><th>operator</th><th>status</th><th>fitness</th><th>parents</th>"
            f"<th>change</th><th>experiments and conclusion</th></tr>{rows}</table>"
            f"</body></html>")
