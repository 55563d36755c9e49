"""Export a candidate as a standalone Python module (DESIGN §6).

The module is the candidate's program unchanged (its KNOBS hold the tuned values), preceded by
a header: problem, fitness against the reference per scenario, the lineage back to the seed, the
Analyst's reasoning summary and the date. It imports only the standard library, so any Python can
import it, and `glia-evo simulate --policy FILE.py --split SPLIT` reproduces the recorded fitness
exactly (the header says which command).
"""
from __future__ import annotations

import ast
import datetime as dt
import textwrap
from pathlib import Path

from population import Candidate, Store, StoreError

from .adapter import adapter_source
from .hygiene import clean
from .problems import get_problem
from .run_folder import RunFolder

HEADER_WIDTH = 96


class ExportError(Exception):
    """Nothing to export, or an unknown candidate: one line for the user."""


def lineage(store: Store, cand: Candidate, limit: int = 200) -> list[Candidate]:
    """The candidate, its first parent, that one's first parent... back to a seed."""
    chain = [cand]
    seen = {cand.id}
    while chain[-1].parents and len(chain) < limit:
        parent = store.get(chain[-1].parents[0])
        if parent is None or parent.id in seen:
            break
        chain.append(parent)
        seen.add(parent.id)
    return chain


def _comment(text: str, indent: str = "") -> list[str]:
    lines = []
    text = clean(text, 4000, multiline=True)     # a candidate's or a model's words
    for para in text.splitlines() or [""]:
        wrapped = textwrap.wrap(para, HEADER_WIDTH - 2 - len(indent)) or [""]
        lines += [f"# {indent}{w}".rstrip() for w in wrapped]
    return lines


def header(store: Store, cand: Candidate, problem_name: str, split: str,
           reference: dict, run_dir: Path, judged: dict | None = None) -> str:
    """`judged`: the held-out verdict (glia_evo.verdict) when the run's report is about this
    candidate: its held-out fitness, the best shipped baseline's, and any warning."""
    problem = get_problem(problem_name)
    lines = [f"# glia-evo policy {cand.id} for the {problem_name} problem",
             f"# exported {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC} from {run_dir}",
             *_comment(f"fitness {cand.fitness:.6f} on the '{split}' split (the search's own, "
                       f"which chose this policy) = geometric mean of {problem.reference} / "
                       f"this policy ({problem.metric})")]
    if judged is not None:
        held = judged["heldout"]
        lines.append(f"# held-out fitness on the '{judged['split']}' split (never used for "
                     f"selection): " + (f"{held:.6f}" if held is not None else "failed"))
        if judged.get("best_baseline"):
            lines.append(f"# best shipped baseline there: {judged['best_baseline']} "
                         f"{judged['best_baseline_fitness']:.6f}; reference "
                         f"{judged['reference']} 1.0")
        for w in judged["warnings"]:
            lines += _comment(f"WARNING: {w}")
    else:
        lines += _comment(f"held-out fitness: not evaluated (run `glia-evo report {run_dir}` "
                          f"before exporting to see it beside the shipped baselines)")
    lines += ["#", f"# {'scenario':<22} {'this':>12} {problem.reference:>12} {'ratio':>8}"]
    for name, metrics in cand.metrics.items():
        mine = metrics.get(problem.metric)
        ref = reference.get(name)
        ratio = f"{ref / mine:.3f}x" if mine and ref else "-"
        ref_text = f"{ref:.3f}" if ref is not None else "-"
        lines.append(f"# {name:<22} {mine:>12.3f} {ref_text:>12} {ratio:>8}")
    lines += ["#", "# lineage (newest first):"]
    for c in lineage(store, cand):
        what = c.rationale or c.operator
        lines += _comment(f"{c.id} [{c.operator}] fitness {c.fitness:.4f}: {what}", "  ")
    if cand.reasoning:
        lines += ["#", "# analyst's reasoning summary:"] + _comment(cand.reasoning, "  ")
    lines += ["#", f"# entry point(s): {', '.join(problem.entrypoints)}; knobs are the values in "
              f"KNOBS below.",
              f"# reproduce: glia-evo simulate --problem {problem_name} --policy THIS_FILE.py "
              f"--split {split}"]
    if _uses_rng(cand.source):
        lines += ["# this policy draws random numbers from a module-level `rng`: glia-evo's "
                  "sandbox provides",
                  "# one seeded per evaluation; elsewhere set `module.rng = random.Random(seed)` "
                  "first."]
    return "\n".join(lines) + "\n"


USAGE = {
    "route": ("decide(queue, replicas, now, knobs=None) -> [(request id, replica id)]",
              "policy.decide(queue=[{\"id\": 7, \"arrival_time\": 0.0, \"prompt_tokens\": 512}],\n"
              "              replicas=[{\"id\": 0, \"num_pending\": 2, \"num_active\": 5,\n"
              "                         \"num_blocks\": 8000, \"block_size\": 16,\n"
              "                         \"free_blocks\": 4100}], now=1.0)"),
    "schedule": ("decide(pending, active, replica, now, knobs=None) -> request ids in order",
                 "policy.decide(pending=[{\"id\": 1, \"arrival_time\": 0.0, "
                 "\"prompt_tokens\": 900}],\n"
                 "              active=[], replica={\"id\": 0, \"num_blocks\": 8000, "
                 "\"block_size\": 16}, now=1.0)"),
    "scale": ("decide(cluster, now, knobs=None) -> replicas wanted",
              "policy.decide(cluster={\"num_replicas\": 2, \"num_ready\": 2, ...}, now=60.0)"),
}


def module_docstring(cand: Candidate, problem_name: str, split: str) -> str:
    """The exported module's own docstring (the seed's would describe another policy)."""
    problem = get_problem(problem_name)
    entry = problem.entrypoints[0] if problem.entrypoints else "decide"
    usage, example = USAGE.get(entry, (f"decide(*args, knobs=None) -> what {entry} returns",
                                       "policy.decide(...)"))
    return (f'"""glia-evo policy {cand.id} for the {problem_name} problem '
            f'(fitness {cand.fitness:.4f} on \'{split}\').\n\n'
            f"Call it on plain data (dicts, dataclasses or any objects with the fields below) "
            f"with\n    {usage}\n"
            f"knobs default to KNOBS' values. For example:\n\n    import policy\n    "
            + example.replace("\n", "\n    ") + "\n\n"
            f"Fields: a request has id, arrival_time (s), prompt_tokens, and optionally\n"
            f"processed_tokens, generated_tokens, restarts (default 0). A replica has id and\n"
            f"optionally state (default \"ready\"), num_blocks and block_size (your servers' KV\n"
            f"cache: blocks, tokens per block), free_blocks or used_blocks, pending and active\n"
            f"(lists of requests), num_pending / num_active (default: their lengths); a field\n"
            f"the policy reads and the data lacks is an AttributeError naming it. Routing with\n"
            f"no ready replica answers [] (the requests wait). `{entry}` itself takes the\n"
            f"simulator's views, as in glia-evo.\n"
            f'"""\n')


def without_docstring(source: str) -> str:
    """The source without its module docstring (a seed's, which describes the seed)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    first = tree.body[0] if tree.body else None
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        return source
    lines = source.splitlines(keepends=True)
    return "".join(lines[:first.lineno - 1] + lines[first.end_lineno:]).lstrip("\n")


def _uses_rng(source: str) -> bool:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return "rng" in source
    return any(isinstance(n, ast.Name) and n.id == "rng" for n in ast.walk(tree))


def export(run_dir: Path, out: Path, candidate_id: str | None, problem_name: str,
           split: str) -> Candidate:
    """Write the module for `candidate_id` (default: the best candidate) and return it."""
    check_out(out)
    try:
        store = Store(RunFolder(run_dir).state, create=False)
    except StoreError as exc:
        raise ExportError(str(exc)) from None
    try:
        if candidate_id:
            cand = store.get(candidate_id)
            if cand is None:
                raise ExportError(f"no candidate {candidate_id!r} in {run_dir}")
            if cand.status != "ok":
                raise ExportError(f"candidate {candidate_id} has status {cand.status}: only "
                                  f"evaluated programs can be exported")
        else:
            from .validation import best_candidate
            cand, _ = best_candidate(store)      # chosen on validation when the run chose
            if cand is None:
                raise ExportError(f"{run_dir} has no evaluated candidate yet")
        reference = (store.get_meta("reference") or {}).get("values", {})
        from .verdict import for_candidate
        text = header(store, cand, problem_name, split, reference, run_dir,
                      for_candidate(run_dir, cand.id, split))
        text += module_docstring(cand, problem_name, split)
        text += "\n" + without_docstring(cand.source).rstrip() + "\n"
        text += adapter_source(get_problem(problem_name).entrypoints)
    finally:
        store.close()
    write_module(out, text)
    return cand


def check_out(out: Path) -> None:
    """`--out` names a file that can be written: not a folder, not under a file, not on a
    virtual or read-only file system. Checked before anything is read or written."""
    import os
    if out.is_dir():
        raise ExportError(f"--out {out} is a folder; give a file name such as {out / 'policy.py'}")
    if out.name in ("", ".", ".."):
        raise ExportError(f"--out {out}: give a file name such as policy.py")
    probe = out.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ExportError(f"cannot write {out}: {probe} is a file, not a folder")
    try:
        st = os.statvfs(probe)
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from None
    if st.f_blocks == 0:
        raise ExportError(f"cannot write {out}: {probe} is on a virtual file system (like /proc "
                          f"or /sys)")
    if st.f_flag & os.ST_RDONLY:
        raise ExportError(f"cannot write {out}: {probe} is on a read-only file system")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write {out}: no permission to write in {probe}")


def write_module(out: Path, text: str) -> None:
    """Written to OUT.tmp and renamed over OUT, so OUT is never half-written; on any failure
    neither OUT.tmp nor a folder this made is left behind."""
    check_out(out)
    made = []
    probe = out.parent
    while not probe.exists() and probe != probe.parent:
        made.append(probe)
        probe = probe.parent
    tmp = out.with_name(out.name + ".tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
    except OSError as exc:
        try:
            if tmp.is_file() or tmp.is_symlink():
                tmp.unlink()
            for folder in made:                   # the innermost first
                folder.rmdir()
        except OSError:
            pass
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from None
