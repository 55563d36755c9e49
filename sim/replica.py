"""One GPU replica: paged KV cache, continuous batching with chunked prefill, eviction + restart.

Semantics of one iteration (the reference, `_explicit_step`):
1. Every decoding request needs room for one more token; if its KV blocks are full it takes a new
   block. As in Vidur's Sarathi scheduler (vLLM's rule), each decoding request needs one free
   block at its turn; while none is free, the last running request in batch order is evicted:
   its blocks are freed, it goes back to the front of the pending list and will restart with
   everything processed so far (prompt + generated tokens) as its new prompt. Batch order is
   Vidur's: decodes, then running prefills, then this iteration's admissions, so the most
   recently admitted request goes first.
2. A token budget of `chunk_size` per iteration: one token per decoding request, then prefill
   chunks of requests already admitted, then new admissions in scheduling order (FCFS unless a
   scheduler policy is set) while blocks (the whole prompt, plus a small watermark), the token
   budget and the batch limit allow; admission stops at the first request that does not fit.
   A scheduler policy is consulted only at iterations where at least one pending request could
   be admitted (`_admission_possible`), so both modes consult it at the same iterations.
3. Duration from the GPU profile (`GpuProfile.iteration_ps` + `attention_extra_ps`; the decode
   KV read as `GpuProfile.decode_kv` counts it, prefill prefixes rounded to the profile's KV
   grid); at the end, prefills that finish emit their first token, decoders emit one token each,
   finished requests free their blocks.

Fast path (`_plan_run`): when nothing can be admitted and every active request is decoding, the
next iterations differ only in KV tokens read (the batch's mean length grows by one a step) and
block growth, so k of them are summed at once in closed form with integer arithmetic, up to the
next completion or eviction. An arrival that reaches this replica cuts the run at the end of the
iteration in progress, unless it could not be admitted during the run anyway.
"""
from __future__ import annotations

import bisect
import operator

import simpy

from .profiles import GpuProfile
from .views import RequestView, PS_PER_S


class Req:
    """A request inside the simulator (times in integer picoseconds)."""

    __slots__ = ("id", "arrival", "prompt", "output", "target", "processed", "generated",
                 "blocks", "restarts", "replica", "admit_seq", "dispatched", "admitted",
                 "first_token", "finish", "queue_view", "pending_view")

    def __init__(self, rid: int, arrival_ps: int, prompt: int, output: int):
        self.id = rid
        self.arrival = arrival_ps
        self.prompt = prompt
        self.output = output
        self.target = prompt        # tokens to prefill (grows to prompt + generated on restart)
        self.processed = 0          # tokens in the KV cache
        self.generated = 0          # output tokens emitted so far
        self.blocks = 0
        self.restarts = 0
        self.replica = None
        self.admit_seq = -1
        self.dispatched = self.admitted = self.first_token = self.finish = None
        self.queue_view = None
        self.pending_view = None    # its view while pending at a replica (fixed until it moves)


_target = operator.attrgetter("target")


class PolicyInvalid(Exception):
    """A policy answered something the simulator cannot carry out; the message says what."""


class PolicyError(Exception):
    """A policy raised; `original` is the exception from the policy's own code."""

    def __init__(self, entrypoint: str, original: BaseException):
        super().__init__(entrypoint, original)   # SimPy re-raises with type(exc)(*exc.args)
        self.entrypoint = entrypoint
        self.original = original

    def __str__(self) -> str:
        return f"{self.entrypoint}: {type(self.original).__name__}: {self.original}"


class _Run:
    """k identical-shape decode iterations, timed and applied analytically."""

    __slots__ = ("start", "steps", "n", "base", "d_n", "growth", "mean", "g", "end", "cut_at")

    def __init__(self, start, steps, n, base, d_n, growth, mean=0, g=1):
        self.start, self.steps, self.n, self.base, self.d_n = start, steps, n, base, d_n
        self.growth = growth            # growth_table() of its decoders
        self.mean, self.g = mean, g     # g > 1: iteration i reads n x roundup_g(mean + i) tokens
        self.end = start + self.time(steps)
        self.cut_at = None

    def time(self, m: int) -> int:
        """The first m iterations: with g == 1 each reads n more KV tokens than the one before
        (`base` includes the first one's); with g > 1, iteration i is timed at n x (mean + i)
        rounded up to a multiple of g (`base` excludes the KV read)."""
        if self.g == 1:
            return m * self.base + self.d_n * (m * (m - 1) // 2)
        g, a = self.g, self.mean
        return m * self.base + self.d_n * g * (_ceil_sum(a + m - 1, g) - _ceil_sum(a - 1, g))

    def done_by(self, now: int) -> int:
        """Iterations finished by `now`: the largest m <= steps with start + time(m) <= now."""
        elapsed = now - self.start
        if elapsed >= self.time(self.steps):
            return self.steps
        lo, hi = 0, self.steps          # time() is increasing: bisect
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.time(mid) <= elapsed:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def blocks_taken(self, m: int, bs: int) -> int:
        """Blocks newly allocated by iterations 0..m-1."""
        return block_growth(self.growth, m, bs)


def _ceil_sum(y: int, g: int) -> int:
    """sum of ceil(j / g) for j = 1..y (0 for y <= 0)."""
    if y <= 0:
        return 0
    q, r = divmod(y, g)
    return g * q * (q + 1) // 2 + r * (q + 1)


def growth_table(cnt: list[int], bs: int) -> list[int]:
    """table[k]: blocks taken by the first k decode iterations (k = 0..bs) when cnt[j] decoders
    hold j mod bs tokens. Iteration i gives a new block to exactly the decoders whose token
    count is a multiple of bs at that point, i.e. those with processed = -i (mod bs)."""
    table = [0] * (bs + 1)
    acc = 0
    for i in range(bs):
        acc += cnt[-i % bs]
        table[i + 1] = acc
    return table


def block_growth(table: list[int], m: int, bs: int) -> int:
    """Blocks taken by m decode iterations (`table` from growth_table: a cycle of bs iterations
    gives every decoder one block)."""
    full, rest = divmod(m, bs)
    return full * table[bs] + table[rest]


def _decode_state(active: list[Req], bs: int) -> tuple[list[int], int, int]:
    """(cnt, kv, steps) of decoding requests: how many hold k mod bs tokens, the KV tokens they
    read, and the iterations until the first of them finishes."""
    cnt = [0] * bs
    kv = 0
    steps = None
    for r in active:
        p = r.processed
        cnt[p % bs] += 1
        kv += p
        left = r.output - r.generated
        if steps is None or left < steps:
            steps = left
    return cnt, kv, steps


class _IterationEnd(simpy.events.Event):
    """A timeout at URGENT priority: an iteration that ends at the same picosecond as an arrival
    is processed first, in both modes, so ties never depend on event creation order."""

    def __init__(self, env: simpy.Environment, delay: int):
        super().__init__(env)
        self._ok = True
        self._value = None
        env.schedule(self, simpy.events.URGENT, delay)


class Replica:
    def __init__(self, rid: int, profile: GpuProfile, env: simpy.Environment, cluster, *,
                 chunk_size: int = 8192, max_batch: int = 256, watermark: float = 0.01,
                 fast: bool = True, state: str = "ready"):
        self.id = rid
        self.profile = profile
        self.env = env
        self.cluster = cluster
        self.chunk_size = chunk_size
        self.max_batch = max_batch
        self.watermark_blocks = int(profile.num_blocks * watermark)
        self.fast = fast
        self.state = state
        self.pending: list[Req] = []
        self.active: list[Req] = []   # in batch order: the last one is evicted first
        self.used_blocks = 0
        self.prefilling = 0           # active requests whose prefill is not done
        self._decode_state = None     # (cnt, kv, steps) of an all-decoding `active`, or None
        self.admit_counter = 0
        self.run: _Run | None = None
        self.wake_event = None
        self.iterations = 0
        self.evictions = 0
        self.busy_ps = 0
        self.started_ps = env.now     # billed from here (cold start included) ...
        self.stopped_ps = None        # ... to here, or to the end of the simulation
        self.ready_ps = env.now if state == "ready" else None
        self.draining_ps = None
        self.proc = env.process(self._loop())

    # --- the cluster's side ----------------------------------------------------------------
    def enqueue(self, req: Req) -> None:
        """A request dispatched here waits in `pending` until an iteration admits it."""
        req.replica = self.id
        req.pending_view = None
        self.pending.append(req)
        if self.wake_event is not None:
            if not self.wake_event.triggered:
                self.wake_event.succeed()
        elif (self.run is not None and self.run.cut_at is None
              and self._admissible_during_run(req)):
            self.run.cut_at = self.env.now
            self.proc.interrupt()

    def _admissible_during_run(self, req: Req) -> bool:
        """Whether `req`, just enqueued, could be admitted at some iteration of the run in
        progress; if not, the run goes on uncut (the reference mode would admit nothing either).
        Nothing is admitted while the batch is full; with FCFS admissions a request behind a
        pending one waits for it; and free blocks only shrink during a run (it ends at the first
        completion), so the free blocks at its start bound them."""
        if len(self.active) >= self.max_batch:
            return False
        if self.cluster.scheduler is None and len(self.pending) > 1:
            return False
        need = -(-req.target // self.profile.block_size)
        return self.profile.num_blocks - self.used_blocks - need >= self.watermark_blocks

    def max_blocks(self) -> int:
        """The most blocks one request may ever need here: the watermark stays free, and at
        least one block (a decoding request alone must find one free at its turn)."""
        return self.profile.num_blocks - max(self.watermark_blocks, 1)

    def used_blocks_at(self, now: int) -> int:
        run = self.run
        if run is None:
            return self.used_blocks
        done = run.done_by(now)
        # the iteration in progress has already taken its blocks at its start
        return self.used_blocks + run.blocks_taken(min(done + 1, run.steps), self.profile.block_size)

    def views(self, reqs: list[Req], now: int, running: bool) -> list[RequestView]:
        """Views of pending (running=False) or active requests as of `now`, mid-run included.

        A pending request does not change until it is admitted or evicted again, so its view is
        made once and reused (enqueue and eviction drop it).
        """
        if not running:
            return [r.pending_view or self._pending_view(r) for r in reqs]
        extra = self.run.done_by(now) if self.run is not None else 0
        return [RequestView(r.id, r.arrival / PS_PER_S, r.prompt, r.processed + extra,
                            r.generated + extra, r.restarts, self.id) for r in reqs]

    def _pending_view(self, r: Req) -> RequestView:
        v = r.pending_view = RequestView(r.id, r.arrival / PS_PER_S, r.prompt, r.processed,
                                         r.generated, r.restarts, self.id)
        return v

    @property
    def idle(self) -> bool:
        return self.wake_event is not None

    # --- the iteration loop ----------------------------------------------------------------
    def _loop(self):
        env = self.env
        while True:
            if self.fast:
                run = self._plan_run()
                if run is not None:
                    yield from self._wait_run(run)
                    continue
            step = self._explicit_step_start()
            if step is None:
                self.wake_event = env.event()
                self.cluster.on_idle(self)
                yield self.wake_event
                self.wake_event = None
                continue
            duration, decoders, chunks = step
            start = env.now
            yield _IterationEnd(env, duration)
            self.busy_ps += env.now - start
            self._explicit_step_end(decoders, chunks)

    def _wait_run(self, run: _Run):
        env = self.env
        self.run = run
        while True:
            try:
                yield _IterationEnd(env, run.end - env.now)
                break
            except simpy.Interrupt:
                cut = min(run.steps, run.done_by(env.now) + 1)
                run.steps = cut
                run.end = run.start + run.time(cut)
        self.run = None
        self._apply_run(run)

    def _admission_possible(self, free: int) -> bool:
        if not self.pending or len(self.active) >= self.max_batch:
            return False
        bs = self.profile.block_size
        if self.cluster.scheduler is None:
            need = -(-self.pending[0].target // bs)
        else:   # the smallest pending request (ceil is monotonic: take the min target first)
            need = -(-min(map(_target, self.pending)) // bs)
        return free - need >= self.watermark_blocks

    def _plan_run(self) -> _Run | None:
        active = self.active
        state, self._decode_state = self._decode_state, None
        if not active or self.prefilling:
            return None              # nothing, or a prefill in progress: not a pure decode run
        prof = self.profile
        bs = prof.block_size
        free = prof.num_blocks - self.used_blocks
        if self._admission_possible(free):
            return None
        if state is not None:        # left by the step or run that just ended
            cnt, kv, steps = state
        else:
            cnt, kv, steps = _decode_state(active, bs)
        n = len(active)
        table = growth_table(cnt, bs)
        # the run ends before the first iteration that could evict: a decoding request must find
        # a free block at its turn, so one block must stay free after the run's growth
        room = free - 1
        if block_growth(table, steps, bs) > room:
            # largest m with growth(m) <= room: whole cycles of bs iterations take n blocks each,
            # then the table (non-decreasing) within the last cycle
            full = room // n
            rest = room - full * n
            m = full * bs + bisect.bisect_right(table, rest, 0, bs) - 1
            steps = min(steps, m)
        if steps < 2:
            return None
        d = prof.d_decode_ps if n > 1 else prof.d_ps
        g = prof.kv_granularity
        if g == 1:
            base = prof.linear_ps(0, n) + d * prof.decode_kv(n, kv)
            return _Run(self.env.now, steps, n, base, d * n, table)
        # the batch's mean length (each request +1, the token it decodes) grows by 1 a step
        return _Run(self.env.now, steps, n, prof.linear_ps(0, n), d * n, table,
                    mean=(kv + n) // n, g=g)

    def _apply_run(self, run: _Run) -> None:
        m = run.steps
        bs = self.profile.block_size
        self.used_blocks += run.blocks_taken(m, bs)
        self.iterations += m
        self.busy_ps += run.time(m)
        finished = []
        keep = []
        # the survivors' decode state for the next plan, gathered on the way
        cnt = [0] * bs
        kv = 0
        steps = None
        for r in self.active:
            p = r.processed = r.processed + m
            g = r.generated = r.generated + m
            r.blocks = -(-p // bs)
            left = r.output - g
            if left <= 0:
                finished.append(r)
                continue
            keep.append(r)
            cnt[p % bs] += 1
            kv += p
            if steps is None or left < steps:
                steps = left
        if finished:
            self.active = keep
            self._finish(finished, keep)
        if steps is not None:
            self._decode_state = (cnt, kv, steps)

    def _explicit_step_start(self):
        """Evict if needed, admit, and return (duration, decoders, prefill chunks) or None.

        Vidur's Sarathi scheduler: running requests in batch order; each decoding request needs
        one free block at its turn (vLLM requires at least one available, even when the request
        does not take a new block this iteration); while none is free the last running request
        not yet scheduled this iteration is evicted (the request itself when it is the last).
        """
        self._decode_state = None
        bs = self.profile.block_size
        order = self.active
        free = self.profile.num_blocks - self.used_blocks
        decoders = []
        prefills = []
        kv = 0
        i = 0
        if free > len(order):
            # each decoding request takes at most one block: none can find the cache full
            taken = 0
            for r in order:
                p = r.processed
                if p < r.target:
                    prefills.append(r)
                    continue
                if p % bs == 0:
                    r.blocks += 1
                    taken += 1
                decoders.append(r)
                kv += p
            self.used_blocks += taken
            i = len(order)
        while i < len(order):
            r = order[i]
            if r.processed < r.target:
                prefills.append(r)
                i += 1
                continue
            while free < 1:
                victim = order.pop()
                self._evict(victim)
                free = self.profile.num_blocks - self.used_blocks
                if victim is r:
                    break
            if i >= len(order):     # r itself was evicted
                break
            if r.processed % bs == 0:
                r.blocks += 1
                self.used_blocks += 1
                free -= 1
            decoders.append(r)
            kv += r.processed
            i += 1
        prof = self.profile
        decode_kv = prof.decode_kv(len(decoders), kv) if decoders else 0
        prefix_kv = 0
        chunks = []
        budget = self.chunk_size - len(decoders)
        for r in prefills:
            if budget > 0:
                c = min(r.target - r.processed, budget)
                chunks.append((r, c))
                prefix_kv += prof.kv_rounded(r.processed)
                budget -= c
        # the batch order Vidur keeps: decodes, then running prefills, then new admissions
        active = self.active = decoders + prefills
        free = self.profile.num_blocks - self.used_blocks
        if budget > 0 and self._admission_possible(free):
            order = self.cluster.admission_order(self)
            for r in order:
                if len(active) >= self.max_batch or budget <= 0:
                    break
                blocks = -(-r.target // bs)
                if free - blocks < self.watermark_blocks:
                    break
                self.pending.remove(r)
                r.blocks = blocks
                self.used_blocks += blocks
                free -= blocks
                r.admit_seq = self.admit_counter
                self.admit_counter += 1
                if r.admitted is None:
                    r.admitted = self.env.now
                self.prefilling += 1
                active.append(r)
                c = min(r.target, budget)
                chunks.append((r, c))
                budget -= c
        if not decoders and not chunks:
            if self.pending:
                # only a scheduler can get here: with nothing running, any pending request fits
                raise PolicyInvalid(
                    f"schedule admitted none of the {len(self.pending)} pending request(s) of "
                    f"replica {self.id} while it had nothing running: it would wait forever "
                    f"(return at least one id when `active` is empty)")
            return None
        prefill = sum(c for _, c in chunks)
        duration = (prof.iteration_ps(prefill, len(decoders), decode_kv + prefix_kv)
                    + prof.attention_extra_ps(sum(c * c for _, c in chunks), len(decoders),
                                              decode_kv, len(chunks), prefix_kv))
        return duration, decoders, chunks

    def _explicit_step_end(self, decoders, chunks) -> None:
        now = self.env.now
        self.iterations += 1
        finished = []
        for r in decoders:
            r.processed += 1
            r.generated += 1
            if r.generated >= r.output:
                finished.append(r)
        for r, c in chunks:
            r.processed += c
            if r.processed == r.target:
                self.prefilling -= 1
                r.generated += 1
                if r.first_token is None:
                    r.first_token = now
                if r.generated >= r.output:
                    finished.append(r)
        self._finish(finished)

    def _evict(self, r: Req) -> None:
        if r.processed < r.target:
            self.prefilling -= 1
        self.used_blocks -= r.blocks
        self.evictions += 1
        r.blocks = 0
        r.processed = 0
        r.target = r.prompt + r.generated
        r.restarts += 1
        r.pending_view = None
        self.pending.insert(0, r)

    def _finish(self, finished: list[Req], keep: list[Req] | None = None) -> None:
        """Free the finished requests' blocks and tell the cluster; `keep`: the active list
        without them, when the caller has it already."""
        if not finished:
            return
        now = self.env.now
        if keep is None:
            done = set(map(id, finished))
            keep = [r for r in self.active if id(r) not in done]
        self.active = keep
        for r in finished:
            self.used_blocks -= r.blocks
            r.blocks = 0
            r.finish = now
        self.cluster.on_completions(self, finished)
