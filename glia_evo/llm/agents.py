"""The LLM agents: Researcher (proposes children), Analyst (explains results), Supervisor (steers).

Each agent works on a *snapshot* the engine took (plain Candidate copies and strings), never on
the store, so it can run in a thread while the engine keeps evaluating. Each returns what the
model said plus the `ChatResult`s of its calls (tokens, cost), which the engine accounts for.
"""
from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field

from population.dedup import code_hash
from sandbox import ALLOWED_IMPORTS

from ..analyst import MAX_WORDS, _clip
from ..hygiene import clean
from ..problems import Problem
from .answers import (AnswerError, ResearchAnswer, example_program, is_echo, parse_answer,
                      signature_text, signatures)
from .client import LLMCancelled, LLMError, LLMFatal, LLMUnavailable
from .prompts import Prompts

SUPERVISOR_WORDS = 300
NOTES_NONE = "(no notes yet)"


def change_of(c) -> str:
    """What a candidate changed, shortly: the hypothesis of an LLM child, else its rationale."""
    return (c.extra.get("hypothesis") if c.extra else None) or c.rationale or "seed program"


def metric_text(m: dict, problem: Problem) -> str:
    keys = problem.prompt_metrics()
    return ", ".join(fmt.format(m[k]) for k, fmt in keys
                     if isinstance(m.get(k), (int, float))) or "-"


def metrics_lines(metrics: dict | None, problem: Problem) -> str:
    if not metrics:
        return "- (none)"
    return "\n".join(f"- {name}: {metric_text(m, problem)}"
                     for name, m in sorted(metrics.items()))


def _fitness(x) -> str:
    return f"{x:.4f}" if isinstance(x, (int, float)) else "-"


def _stage1(c):
    x = (c.extra or {}).get("stage1_fitness")
    return x if isinstance(x, (int, float)) else None


def _bar(c):
    diag = (c.extra or {}).get("diagnostics") or {}
    x = diag.get("cascade", {}).get("bar") if isinstance(diag, dict) else None
    return x if isinstance(x, (int, float)) else None


def fitness_fact(c) -> str:
    """A candidate's fitness as it really is: for one the quick cascade stage rejected, its
    first-stage fitness (its stored fitness 0 is no measurement); "-" when it did not run."""
    if c.status == "rejected":
        s1, bar = _stage1(c), _bar(c)
        if s1 is not None:
            return (f"{s1:.4f} on the quick first stage, below its bar"
                    f"{f' of {bar:.4f}' if bar is not None else ''} (rejected there, not run "
                    f"on the full split)")
        return "- (rejected by the quick first stage)"
    if c.status != "ok":
        return "- (no fitness: the program did not run to the end)"
    return _fitness(c.fitness)


def facts_fitness(*cands) -> list[float]:
    """The fitness values a text about these candidates may state."""
    out = []
    for c in cands:
        if c is None:
            continue
        if c.status == "ok" and isinstance(c.fitness, (int, float)):
            out.append(float(c.fitness))
        elif c.status not in ("rejected",):
            out.append(0.0)
        for x in (_stage1(c), _bar(c)):
            if x is not None:
                out.append(float(x))
    return out


# --------------------------------------------------------------------------------- validation

CODE_LINE_RE = re.compile(r"^[ \t]*(def [A-Za-z_]\w*\(.*\)\s*:|class \w+.*:|import \w+|"
                          r"from [\w.]+ import |return\b|for .+ in .+:$|if .+:$|[A-Za-z_]\w* = .+)",
                          re.M)
ERROR_TYPE_RE = re.compile(r"\b([A-Z][A-Za-z]*(?:Error|Exception|Interrupt|Exit))\b")
FITNESS_RE = re.compile(r"fitness(?:\s+(?:of|was|is|at|=|reached|:)|\s*[:=])?\s*(?:only\s+)?"
                        r"(-?\d+(?:\.\d+)?)\b", re.I)


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9.]+", " ", text.lower()).split()


def echo_share(text: str, prompt: str, n: int = 8) -> float:
    """The share of `text`'s n-word runs copied from `prompt` (1.0: the text is a copy)."""
    mine, theirs = _words(text), _words(prompt)
    if len(mine) < n:
        return 1.0 if mine and " ".join(mine) in " ".join(theirs) else 0.0
    have = {tuple(theirs[i:i + n]) for i in range(len(theirs) - n + 1)}
    runs = [tuple(mine[i:i + n]) for i in range(len(mine) - n + 1)]
    return sum(r in have for r in runs) / len(runs)


def note_problem(text: str, prompt: str, max_words: int) -> str | None:
    """Why a Supervisor's or Analyst's text must not reach another prompt, or None: too long,
    holding code (a fenced block or program lines), or an echo of the prompt it was given."""
    if "```" in text or "<<<<<<<" in text or ">>>>>>>" in text:
        return "it holds a code block (notes and summaries must be prose)"
    code = CODE_LINE_RE.findall(text)
    if len(code) >= 2 or re.search(r"^[ \t]*def [A-Za-z_]\w*\(", text, re.M):
        return "it holds program text (notes and summaries must be prose)"
    if len(text.split()) > 3 * max_words:
        return f"it is {len(text.split())} words long (at most {max_words})"
    if echo_share(text, prompt) >= 0.5:
        return "it repeats the prompt instead of answering it"
    return None


def _close(v: float, allowed: list[float]) -> bool:
    return any(abs(v - a) <= max(0.006, 0.01 * abs(a)) for a in allowed)


def summary_contradiction(text: str, cand, parent) -> str | None:
    """Why an Analyst's summary contradicts the facts it was given, or None: it leaves out the
    error type the candidate failed with, or states a fitness neither it nor its parent had."""
    if cand.status != "ok" and cand.error:
        m = ERROR_TYPE_RE.search(cand.error)
        if m and m.group(1).lower() not in text.lower():
            return f"it does not name the candidate's error ({m.group(1)})"
    allowed = facts_fitness(cand, parent)
    for m in FITNESS_RE.finditer(text):
        try:
            v = float(m.group(1))
        except ValueError:
            continue
        if not _close(v, allowed):
            return (f"it states fitness {m.group(1)}, which neither the candidate "
                    f"({fitness_fact(cand)}) nor its parent had")
    return None


# --------------------------------------------------------------------------------- Researcher

@dataclass
class ResearchSnapshot:
    index: int
    island: int
    parent: object                     # Candidate
    inspirations: list
    notes: str
    model: str
    summaries: dict = field(default_factory=dict)   # candidate id -> Future[str | None]
    known: dict = field(default_factory=dict)       # code hash -> id of the stored programs
    # a research turn's budget of simulated requests (None: the tools' experiment_requests; the
    # engine lowers it to what is left of the run's budget of evaluation work)
    experiment_requests: int | None = None


@dataclass
class ResearchOutcome:
    status: str                        # ok | discarded | unavailable | fatal | cancelled | error
    model: str
    answer: ResearchAnswer | None = None
    calls: list = field(default_factory=list)        # ChatResult per call that answered
    errors: list = field(default_factory=list)       # why each answer was unusable
    reasons: list = field(default_factory=list)      # the short kind of each (AnswerError.kind)
    message: str = ""                                # transport / endpoint failure
    repaired: bool = False
    prompt: str = ""                                 # the first user message (for events)
    # a research turn (experiments > 0): the experiment records (JSON data, cleaned), the
    # CONCLUSION the model drew from them, what they cost and the experiments.md text
    experiments: list = field(default_factory=list)
    conclusion: str = ""
    work: dict = field(default_factory=dict)         # calls, errors, simulations, requests, ...
    experiments_md: str = ""
    protocol: str = ""                               # "tools" | "text" (how it called them)


def _outcome_of(exc: LLMError) -> str:
    if isinstance(exc, LLMFatal):
        return "fatal"
    if isinstance(exc, LLMCancelled):
        return "cancelled"
    if isinstance(exc, LLMUnavailable):
        return "unavailable"
    return "error"


def _tokens(messages: list[dict]) -> int:
    """A prompt's tokens at ~4 characters per token."""
    return sum(len(m["content"]) for m in messages) // 4 + 1


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars].rstrip() + " [...]"


class Researcher:
    """Proposes children. With `tools` (glia_evo.research.make_tools) and `experiments` K > 0,
    a proposal is a research turn: hypothesis, up to K experiments (simulate, request_log,
    compare, workload_stats, through the chat API's function calling or the EXPERIMENT: text
    protocol), a CONCLUSION, then the code; `experiments = 0` is the plain proposal."""

    def __init__(self, client, problem, prompts: Prompts, summary_wait_s: float = 600.0, *,
                 tools=None, experiments: int = 0, context_tokens: int | None = None):
        self.client = client
        self.context_tokens = context_tokens or None
        self.problem = problem
        self.prompts = prompts
        self.summary_wait_s = summary_wait_s
        self.tools = tools
        self.experiments = max(0, int(experiments or 0)) if tools is not None else 0
        # function calling (None: not known yet, tried first), or the text protocol
        self.native = getattr(tools, "native", None)
        self.sigs = signatures(problem)
        self.signatures = "\n".join(
            f"    {signature_text(e, self.sigs[e])}" if e in self.sigs else f"    {e}(...)"
            for e in problem.entrypoints)
        self.example = example_program(problem).rstrip()

    def _summary(self, snap: ResearchSnapshot, cand) -> str:
        """The Analyst's summary of `cand`: the LLM one if it is being written (waited for),
        else the stored one (also while its call still waits for an endpoint slot)."""
        fut = snap.summaries.get(cand.id)
        started = getattr(fut, "started", None)
        if fut is not None and started is not None and not started.is_set() and not fut.done():
            fut = None       # still queued for the endpoint's slot: no waiting behind it
        if fut is not None:
            try:
                text, _ = fut.result(timeout=self.summary_wait_s)   # LLMAnalyst.summarize
            except Exception:   # noqa: BLE001 - a failed Analyst call leaves the stored summary
                text = None
            if text:
                return text
        return cand.reasoning or "(none)"

    def _checked_answer(self, snap: ResearchSnapshot, result, prompt: str):
        """The answer parsed and checked (raises AnswerError), including that it is not a copy
        of a program already in the search."""
        answer = parse_answer(result.text, snap.parent.source, self.problem.entrypoints,
                              sigs=self.sigs, finish_reason=result.finish_reason, prompt=prompt)
        same = snap.known.get(code_hash(answer.source)) if snap.known else None
        if same is not None:
            raise AnswerError(f"the new program is the same as program {same}, which is already "
                              f"in the search (only docstrings, comments or formatting differ, "
                              f"if anything): propose a different change", "duplicate")
        return answer

    def messages(self, snap: ResearchSnapshot) -> list[dict]:
        """The Researcher's prompt; with a known context size, the short variant that fits it
        (room kept for the answer): inspirations dropped from the last, then the notes and the
        parent's summary shortened."""
        msgs = self._messages(snap, len(snap.inspirations), None)
        budget = self._prompt_budget()
        if budget is None:
            return msgs
        for keep in range(len(snap.inspirations) - 1, -1, -1):
            if _tokens(msgs) <= budget:
                return msgs
            msgs = self._messages(snap, keep, None)
        for chars in (1200, 400, 120):
            if _tokens(msgs) <= budget:
                break
            msgs = self._messages(snap, 0, chars)
        return msgs

    def _prompt_budget(self) -> int | None:
        if not self.context_tokens:
            return None
        answer = int(getattr(getattr(self.client, "cfg", None), "max_output_tokens", 0) or 0)
        return max(1, self.context_tokens - min(answer, self.context_tokens // 2) - 64)

    def _messages(self, snap: ResearchSnapshot, inspirations_kept: int,
                  short: int | None) -> list[dict]:
        p = self.problem
        parent = snap.parent
        inspirations = "\n\n".join(
            self.prompts.render("inspiration", id=c.id, fitness=_fitness(c.fitness),
                                rationale=change_of(c), reasoning=self._summary(snap, c),
                                source=c.source.rstrip())
            for c in snap.inspirations[:inspirations_kept]) or "(none yet)"
        notes = snap.notes.strip() or NOTES_NONE
        reasoning = self._summary(snap, parent)
        if short is not None:
            notes, reasoning = _cut(notes, short), _cut(reasoning, short)
        system = self.prompts.render(
            "researcher_system", problem=p.name,
            entrypoints=", ".join(f"`{e}`" for e in p.entrypoints),
            imports=", ".join(ALLOWED_IMPORTS), signatures=self.signatures,
            example=self.example)
        user = self.prompts.render(
            "researcher", problem=p.name, description=p.description.strip(),
            notes=notes, parent_id=parent.id, island=snap.island,
            generation=parent.generation, parent_fitness=_fitness(parent.fitness),
            parent_status=parent.status, parent_rationale=change_of(parent),
            parent_metrics=metrics_lines(parent.metrics, p),
            parent_reasoning=reasoning, parent_source=parent.source.rstrip(),
            inspirations=inspirations)
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def propose(self, snap: ResearchSnapshot) -> ResearchOutcome:
        """Ask once; if the answer is unusable, ask again with the exact error; then give up.
        With experiments, a research turn first (`research`)."""
        if self.experiments > 0:
            return self.research(snap)
        out = ResearchOutcome(status="ok", model=snap.model)
        try:
            msgs = self.messages(snap)
        except Exception as exc:   # noqa: BLE001 - a broken template must not kill the run
            out.status, out.message = "error", f"cannot build the prompt: {exc!r}"
            return out
        out.prompt = msgs[-1]["content"]
        for attempt in range(2):
            try:
                result = self.client.chat(msgs, snap.model,
                                          call_id=f"researcher-{snap.index}-{attempt + 1}")
            except LLMError as exc:
                out.calls.extend(exc.usage)        # e.g. attempts abandoned after a timeout
                out.status, out.message = _outcome_of(exc), str(exc)
                return out
            out.calls.append(result)
            try:
                out.answer = self._checked_answer(snap, result, msgs[0]["content"])
            except AnswerError as exc:
                out.errors.append(str(exc))
                out.reasons.append(exc.kind)
                if attempt == 0:
                    msgs = msgs + [
                        {"role": "assistant", "content": result.text},
                        {"role": "user", "content": self.prompts.render(
                            "researcher_repair", error=str(exc), parent_id=snap.parent.id,
                            signatures=self.signatures)}]
                continue
            out.repaired = attempt == 1
            return out
        out.status = "discarded"
        return out


    # ------------------------------------------------------------------------- research turn
    def _turn_requests(self, snap: ResearchSnapshot) -> int:
        cap = snap.experiment_requests
        return self.tools.max_requests if cap is None else cap

    def research_messages(self, snap: ResearchSnapshot) -> list[dict]:
        msgs = self.messages(snap)
        t = self.tools
        extra = self.prompts.render(
            "researcher_experiments", experiments=self.experiments, parent_id=snap.parent.id,
            scenarios=", ".join(t.scenario_names()), overrides=t.overrides_text(),
            example_scenario=t.scenario_names()[0],
            requests=self._turn_requests(snap) or "no limit")
        msgs[-1] = {"role": "user", "content": msgs[-1]["content"] + "\n\n" + extra}
        return msgs

    def research(self, snap: ResearchSnapshot) -> ResearchOutcome:
        """hypothesis -> up to K experiments -> conclusion -> code. The model's tool calls (or
        EXPERIMENT: lines) are run by a session of `self.tools` and answered in the
        conversation; a malformed call gets an error answer and the turn goes on. When the
        experiments are used (or a budget is spent) it is asked for the CONCLUSION and the code,
        which are read (and repaired once) as a plain proposal's answer."""
        from ..research.protocol import (TOOL_SCHEMAS, assistant_message, native_calls,
                                         text_calls, text_results, tool_message)
        out = ResearchOutcome(status="ok", model=snap.model)
        try:
            msgs = self.research_messages(snap)
            session = self.tools.session(snap.parent, calls=self.experiments,
                                         max_requests=self._turn_requests(snap))
        except Exception as exc:   # noqa: BLE001 - a broken template must not kill the run
            out.status, out.message = "error", f"cannot build the prompt: {exc!r}"
            return out
        out.prompt = msgs[-1]["content"]
        used_native = False
        rounds, max_rounds = 0, self.experiments + 2      # malformed calls may be retried
        closing = False
        result = None
        while True:
            offer = not closing
            native = self.native is not False
            kwargs = {}
            if native and (offer or used_native):
                kwargs["tools"] = TOOL_SCHEMAS
                if not offer:
                    kwargs["tool_choice"] = "none"
            try:
                result = self.client.chat(msgs, snap.model,
                                          call_id=f"researcher-{snap.index}-x{rounds + 1}",
                                          **kwargs)
            except LLMError as exc:
                if kwargs and not used_native and type(exc) is LLMError:
                    # a 400 for the request with `tools`: an endpoint without function
                    # calling; the text protocol from now on (for every later turn too)
                    self.native = False
                    out.work["tools_refused"] = clean(str(exc), 200)
                    continue
                out.calls.extend(exc.usage)
                out.status, out.message = _outcome_of(exc), str(exc)
                return self._finish(out, session)
            out.calls.append(result)
            session.add_tokens(result.tokens)
            if result.tool_calls:
                calls, via = native_calls(result.tool_calls), "tools"
            else:
                calls, via = text_calls(result.text), "text"
            if not calls or not offer:
                break
            if self.native is None and via == "tools":
                self.native = True
            out.protocol = out.protocol or via
            rounds += 1
            why = result.text.strip()
            answers = []
            for call in calls:
                if call.error:
                    answers.append((call, session.reject(call.name, call.error, via=via,
                                                         why=why)))
                else:
                    answers.append((call, session.call(call.name, call.arguments, why=why,
                                                       via=via)))
            if via == "tools":
                used_native = True
                msgs = msgs + [assistant_message(result.text, result.tool_calls)] + [
                    tool_message(c, a) for c, a in answers]
            else:
                msgs = msgs + [{"role": "assistant", "content": result.text},
                               {"role": "user", "content": text_results(answers)}]
            spent = session.exhausted()
            if spent or rounds >= max_rounds:
                closing = True
                msgs = msgs + [{"role": "user", "content": self.prompts.render(
                    "researcher_conclude", why=spent or "the experiment rounds are used",
                    parent_id=snap.parent.id)}]
        self._answer(snap, msgs, out, result, tools=TOOL_SCHEMAS if used_native else None)
        return self._finish(out, session)

    def _finish(self, out: ResearchOutcome, session) -> ResearchOutcome:
        from ..research import experiments_markdown
        out.experiments = list(session.records)
        out.work = {**session.work(), **out.work}
        if out.answer is not None:
            out.conclusion = out.answer.conclusion
            out.answer.experiments = out.experiments
        out.experiments_md = experiments_markdown(
            out.experiments, out.conclusion,
            out.answer.hypothesis if out.answer is not None else "")
        return out

    def _answer(self, snap, msgs, out: ResearchOutcome, result, tools=None) -> None:
        """The plain proposal's reading of an answer (one repair round), starting from
        `result`, the answer already received (and counted in out.calls)."""
        from ..research.protocol import assistant_message, error_answer, native_calls, \
            tool_message
        for attempt in range(2):
            if attempt == 1:
                kwargs = {"tools": tools, "tool_choice": "none"} if tools else {}
                try:
                    result = self.client.chat(msgs, snap.model,
                                              call_id=f"researcher-{snap.index}-{attempt + 1}",
                                              **kwargs)
                except LLMError as exc:
                    out.calls.extend(exc.usage)
                    out.status, out.message = _outcome_of(exc), str(exc)
                    return
                out.calls.append(result)
            try:
                out.answer = self._checked_answer(snap, result, msgs[0]["content"])
            except AnswerError as exc:
                out.errors.append(str(exc))
                out.reasons.append(exc.kind)
                if attempt == 0:
                    if result.tool_calls:    # calls after the experiments were closed
                        late = native_calls(result.tool_calls)
                        msgs = msgs + [assistant_message(result.text, result.tool_calls)] + [
                            tool_message(c, error_answer("no more experiments in this turn"))
                            for c in late]
                    else:
                        msgs = msgs + [{"role": "assistant", "content": result.text}]
                    msgs = msgs + [{"role": "user", "content": self.prompts.render(
                        "researcher_repair", error=str(exc), parent_id=snap.parent.id,
                        signatures=self.signatures)}]
                continue
            out.repaired = attempt == 1
            return
        out.status = "discarded"


# --------------------------------------------------------------------------------- Analyst

@dataclass
class AnalystSnapshot:
    candidate: object                  # Candidate, evaluated
    parent: object                     # Candidate
    model: str
    started: object = None             # threading.Event: set when the call is being answered
    give_up: object = None             # threading.Event: set to abandon it while it is queued


class LLMAnalyst:
    def __init__(self, client, problem, prompts: Prompts):
        self.client = client
        self.problem = problem
        self.prompts = prompts

    def messages(self, snap: AnalystSnapshot) -> list[dict]:
        c, parent = snap.candidate, snap.parent
        lines = []
        theirs = parent.metrics or {}
        for name in sorted(set(c.metrics or {}) | set(theirs)):
            mine = metric_text(c.metrics[name], self.problem) if name in c.metrics else "-"
            old = metric_text(theirs[name], self.problem) if name in theirs else "-"
            lines.append(f"- {name}: {mine}\n  parent: {old}")
        diff = "".join(list(difflib.unified_diff(
            parent.source.splitlines(keepends=True), c.source.splitlines(keepends=True),
            f"{parent.id}.py", f"{c.id}.py", n=2))[:120]) or "(no textual change)"
        diagnostics = json.dumps(c.extra.get("diagnostics", {}), default=str)[:3000]
        system = self.prompts.render("analyst_system", problem=self.problem.name,
                                     max_words=MAX_WORDS)
        user = self.prompts.render(
            "analyst", id=c.id, problem=self.problem.name, status=c.status,
            fitness=fitness_fact(c), parent_id=parent.id,
            parent_fitness=_fitness(parent.fitness), error=c.error or "none",
            hypothesis=c.extra.get("hypothesis") or "-", rationale=c.rationale or "-",
            metrics="\n".join(lines) or "- (none: the program did not run)",
            diagnostics=diagnostics or "{}", diff=diff.rstrip(), max_words=MAX_WORDS)
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def summarize(self, snap: AnalystSnapshot):
        """(summary of at most MAX_WORDS words, ChatResult); LLMError on failure."""
        msgs = self.messages(snap)
        result = self.client.chat(msgs, snap.model,
                                  max_tokens=min(self.client.cfg.max_output_tokens or 600, 600),
                                  call_id=f"analyst-{snap.candidate.id}", priority=1,
                                  on_admit=snap.started.set if snap.started else None,
                                  give_up=snap.give_up)
        raw = result.text.strip()
        if not raw:
            raise LLMError("the Analyst's answer was empty", usage=[result])
        why = note_problem(raw, "\n".join(m["content"] for m in msgs), MAX_WORDS) \
            or summary_contradiction(raw, snap.candidate, snap.parent)
        if why:       # the rule-based summary stays
            raise LLMError(f"the Analyst's summary was refused: {why}", usage=[result])
        return _clip(" ".join(raw.split())), result


# --------------------------------------------------------------------------------- Supervisor

INSIGHTS_RE = re.compile(r"^[ \t>*#_-]*insights?[ \t*_]*:?[ \t*_]*$|^[ \t>*#_-]*insights?[ \t*_]*:"
                         r"[ \t*_]*(?P<inline>\S.*)$", re.M | re.I)


def conclusion_of(c) -> str:
    """' Experiments (N): <conclusion>' for a child of a research turn, else ''."""
    extra = c.extra or {}
    text = extra.get("conclusion")
    if not text:
        return ""
    n = extra.get("experiments")
    n = len(n) if isinstance(n, list) else n
    return (f". Experiments{f' ({n})' if isinstance(n, int) else ''}, conclusion: "
            f"{clean(' '.join(str(text).split()), 600)}")


def split_insights(notes: str) -> list[str]:
    """The Supervisor's "INSIGHTS" (what was learnt about the workload): the bullet lines
    after an `INSIGHTS:` heading (or the text after it on its line), at most 10, cleaned."""
    m = INSIGHTS_RE.search(notes or "")
    if not m:
        return []
    out = []
    if m.group("inline"):
        out.append(m.group("inline"))
    for line in notes[m.end():].splitlines():
        t = line.strip()
        if not t:
            if out:
                break
            continue
        if re.match(r"^#{1,6}\s", t) or (re.match(r"^[A-Z][A-Z ]+:", t) and not
                                          t.startswith(("-", "*"))):
            break
        out.append(t.lstrip("-*• ").strip())
    return [clean(x, 300) for x in out if x][:10]

@dataclass
class SupervisorSnapshot:
    review: int
    evaluations: int
    leaderboard: list
    island_best: list                  # (island, Candidate | None)
    recent: list
    previous: str
    model: str
    # children of research turns with a conclusion, the latest few of every island
    conclusions: list = field(default_factory=list)


def conclusions_text(cands: list) -> str:
    """The research turns' conclusions, island by island, each with what its child then did
    (its fitness against its parent's), so the Supervisor can tell supported ones from weak
    ones."""
    lines = []
    for c in sorted(cands, key=lambda c: (c.island, c.id)):
        extra = c.extra or {}
        exps = extra.get("experiments") if isinstance(extra.get("experiments"), list) else []
        tools = ", ".join(dict.fromkeys(clean(e.get("tool"), 20) for e in exps
                                        if isinstance(e, dict) and e.get("ok")))
        answered = sum(1 for e in exps if isinstance(e, dict) and e.get("ok"))
        lines.append(
            f"- island {c.island}: {c.id} (parent {c.parents[0] if c.parents else '-'}, "
            f"fitness {fitness_fact(c)} vs the parent's {_fitness(extra.get('parent_fitness'))}"
            f"; {answered} experiment{'s' if answered != 1 else ''}"
            f"{': ' + tools if tools else ''}): "
            f"{clean(' '.join(str(extra.get('conclusion')).split()), 600)}")
    if not lines:
        return ""        # no research turn: the prompt is the plain one
    return ("\n## Conclusions of research turns, across islands (each with its child's "
            "fitness)\n" + "\n".join(lines) + "\n")


class Supervisor:
    def __init__(self, client, problem, prompts: Prompts):
        self.client = client
        self.problem = problem
        self.prompts = prompts

    def messages(self, snap: SupervisorSnapshot) -> list[dict]:
        board = "\n".join(f"{i}. {c.id} fitness {_fitness(c.fitness)} (island {c.island}, "
                          f"{c.operator}{', ' + c.model if c.model else ''}): {change_of(c)}"
                          for i, c in enumerate(snap.leaderboard, 1)) or "(empty)"
        islands = "\n".join(f"- island {i}: " + (f"{c.id} fitness {_fitness(c.fitness)}" if c
                                                   else "no members")
                            for i, c in snap.island_best) or "(none)"
        recent = "\n".join(f"- {c.id} (island {c.island}, parent "
                           f"{c.parents[0] if c.parents else '-'}): {c.status}, fitness "
                           f"{fitness_fact(c)}. Change: {change_of(c)}. Analyst: "
                           f"{c.reasoning or '-'}{conclusion_of(c)}" for c in snap.recent) \
            or "(none)"
        best = snap.leaderboard[0] if snap.leaderboard else None
        system = self.prompts.render("supervisor_system", problem=self.problem.name,
                                     max_words=SUPERVISOR_WORDS)
        user = self.prompts.render(
            "supervisor", review=snap.review, evaluations=snap.evaluations, leaderboard=board,
            islands=islands, recent=recent, previous=snap.previous.strip() or NOTES_NONE,
            conclusions=conclusions_text(snap.conclusions),
            best_id=best.id if best else "-",
            best_source=best.source.rstrip() if best else "")
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def review(self, snap: SupervisorSnapshot):
        """(notes, ChatResult); LLMError on failure."""
        msgs = self.messages(snap)
        result = self.client.chat(msgs, snap.model,
                                  max_tokens=min(self.client.cfg.max_output_tokens or 1200, 1200),
                                  call_id=f"supervisor-{snap.review}")
        text = result.text.strip()
        if not text:
            raise LLMError("the Supervisor's answer was empty", usage=[result])
        asked = "\n".join(m["content"] for m in msgs)
        if snap.previous.strip():      # repeating its own earlier advice is no echo
            asked = asked.replace(snap.previous.strip(), "")
        why = note_problem(text, asked, SUPERVISOR_WORDS)
        if why:       # the previous notes stay
            raise LLMError(f"the Supervisor's notes were refused: {why}", usage=[result])
        words = text.split()
        if len(words) > 2 * SUPERVISOR_WORDS:
            text = " ".join(words[:2 * SUPERVISOR_WORDS]) + " …"
        return text, result
