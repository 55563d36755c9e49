"""The lineage graph of a search as JSON and as one self-contained HTML page (inline SVG).

Viewable from the MLflow artifact browser, from `glia-evo ui`'s lineage address, or straight from
the run folder: no external resource, and no script beyond the few lines that fix its links when
it is shown inside MLflow (below). Columns are generations, one row per candidate in order of
creation within its generation; an edge joins each candidate to its parents; colour shows fitness, grey a failure.
A child of a research turn (issue 18) shows its experiments (the tools it called) and its
conclusion; the full record is the child's `experiments.md` artifact.

Clickable (issue 15): given `links` (candidate id -> its MLflow run page, a route of the MLflow
UI such as `#/experiments/1/runs/<run id>`, or a full address), each node and each table row's
id opens that candidate's run. Where a link can go depends on where the page is shown:

- `glia-evo ui` serves the page itself (its "lineage page" address) with full addresses of the
  MLflow server it started: a click opens the candidate's run page in the same tab.
- MLflow's artifact viewer shows `lineage.html` in an iframe sandboxed to `allow-scripts` alone
  (MLflow 3.x): no navigation of the window, no new tab, and the MLflow UI does not load inside
  the frame. The page's one small script turns the routes into full addresses of the server the
  frame came from (so "copy link" gives the run's address) and says where to click instead.
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


def _href(links: dict | None, cid: str, base: str) -> str | None:
    route = (links or {}).get(cid)
    return None if not route else html.escape(base + route, quote=True)


# MLflow's artifact viewer: the page's address is blob:<MLflow's origin>/<uuid>; the routes become
# full addresses on that origin, and a note says the frame cannot open them (MLflow's sandbox).
_SCRIPT = """<script>(function(){
var framed = window.top !== window, blob = location.protocol === 'blob:';
if (!framed && !blob) return;
var base = blob ? new URL(location.href.slice(5)).origin + '/' : '';
document.querySelectorAll('a[data-run]').forEach(function(a){
  var h = a.getAttribute('href'); if (h.charAt(0) === '#') a.setAttribute('href', base + h); });
var note = document.getElementById('framed');
if (note) note.style.display = 'block';
})();</script>"""


def lineage_html(candidates: list[dict], title: str = "glia-evo lineage",
                 links: dict[str, str] | None = None, base: str = "") -> str:
    """The page. `links`: candidate id -> its MLflow run page as a route of the MLflow UI
    (`#/experiments/<id>/runs/<run id>`); `base` is put before each route (`glia-evo ui`
    gives its MLflow address, `http://127.0.0.1:5000/`; empty for the logged artifact)."""
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
        node = (f'<title>{tip}</title><circle cx="{x}" cy="{y}" r="7" '
                f'fill="{_colour(c, lo, hi)}"{ring}/><text x="{x + 10}" y="{y + 3}">'
                f'{html.escape(c["id"])} {c.get("fitness") or 0:.3f}</text>')
        href = _href(links, c["id"], base)
        parts.append(f'<a class="node" data-run="{html.escape(c["id"], quote=True)}" '
                     f'href="{href}" target="_top">{node}</a>' if href else f'<g>{node}</g>')
    parts.append("</svg>")

    def cell(c: dict) -> str:
        href = _href(links, c["id"], base)
        text = html.escape(c["id"])
        return (f'<a data-run="{text}" href="{href}" target="_top">{text}</a>' if href
                else text)

    linked = bool(links) and any(c["id"] in links for c in candidates)
    rows = "".join(
        f"<tr><td>{cell(c)}</td><td>{c.get('generation')}</td>"
        f"<td>{c.get('island')}</td><td>{html.escape(str(c.get('operator')))}</td>"
        f"<td>{html.escape(str(c.get('status')))}</td><td>{c.get('fitness') or 0:.4f}</td>"
        f"<td>{html.escape(', '.join(c.get('parents') or []))}</td>"
        f"<td>{html.escape(c.get('rationale') or '')}</td>"
        f"<td>{html.escape(_research(c))}</td></tr>"
        for c in sorted(candidates, key=lambda c: -(c.get("fitness") or 0)))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>body{{font-family:sans-serif}}td,th{{padding:2px 6px;"
            f"border-bottom:1px solid #ddd;font-size:12px}}a.node{{cursor:pointer}}"
            f"a.node:hover circle{{stroke:#000;stroke-width:3}}#framed{{display:none;"
            f"background:#fff6d6;padding:4px 8px;font-size:12px}}</style></head><body>"
            f"<h2>{html.escape(title)}</h2><p>{len(candidates)} candidates; columns are "
            f"generations, hover a node for its change"
            f"{'; click it to open its MLflow run' if linked else ''}; the best is ringed, "
            f"a child of a research turn has a dashed blue ring (its experiments.md holds the "
            f"whole record).</p>"
            + ("<p id='framed'>Shown inside MLflow's artifact preview, which lets no link leave "
               "it: open the lineage page at the address <code>glia-evo ui</code> prints, "
               "where a click on a node opens that candidate's run.</p>" if linked else "")
            + f"<div style='overflow:auto'>{''.join(parts)}</div>"
            f"<h3>All candidates, fittest first</h3><table><tr><th>id</th><th>gen</th>"
            f"<th>island</th><th>operator</th><th>status</th><th>fitness</th><th>parents</th>"
            f"<th>change</th><th>experiments and conclusion</th></tr>{rows}</table>"
            f"{_SCRIPT if linked else ''}</body></html>")
