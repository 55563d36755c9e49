"""The lineage graph of a search as JSON and as one self-contained HTML page (inline SVG).

Viewable from the MLflow artifact browser or straight from the run folder: no script, no
external resource. Columns are generations, one row per candidate in order of creation within its
generation; an edge joins each candidate to its parents; colour shows fitness, grey a failure.
"""
from __future__ import annotations

import html
import json

FIELDS = ("id", "parents", "fitness", "operator", "status", "island", "generation", "rationale")


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
        ring = ' stroke="black" stroke-width="2"' if best is not None and c is best else ""
        tip = html.escape(f"{c['id']} {c.get('operator')} {c.get('status')} "
                          f"fitness {c.get('fitness') or 0:.4f}\n{c.get('rationale') or ''}")
        parts.append(f'<g><title>{tip}</title><circle cx="{x}" cy="{y}" r="7" '
                     f'fill="{_colour(c, lo, hi)}"{ring}/><text x="{x + 10}" y="{y + 3}">'
                     f'{html.escape(c["id"])} {c.get("fitness") or 0:.3f}</text></g>')
    parts.append("</svg>")
    rows = "".join(
        f"<tr><td>{html.escape(c['id'])}</td><td>{c.get('generation')}</td>"
        f"<td>{c.get('island')}</td><td>{html.escape(str(c.get('operator')))}</td>"
        f"<td>{html.escape(str(c.get('status')))}</td><td>{c.get('fitness') or 0:.4f}</td>"
        f"<td>{html.escape(', '.join(c.get('parents') or []))}</td>"
        f"<td>{html.escape(c.get('rationale') or '')}</td></tr>"
        for c in sorted(candidates, key=lambda c: -(c.get("fitness") or 0)))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>body{{font-family:sans-serif}}td,th{{padding:2px 6px;"
            f"border-bottom:1px solid #ddd;font-size:12px}}</style></head><body>"
            f"<h2>{html.escape(title)}</h2><p>{len(candidates)} candidates; columns are "
            f"generations, hover a node for its change; the best is ringed.</p>"
            f"<div style='overflow:auto'>{''.join(parts)}</div>"
            f"<h3>All candidates, fittest first</h3><table><tr><th>id</th><th>gen</th>"
            f"<th>island</th><th>operator</th><th>status</th><th>fitness</th><th>parents</th>"
            f"<th>change</th></tr>{rows}</table></body></html>")
