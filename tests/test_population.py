"""population/: candidates, code hashing, the SQLite store and the islands."""
from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from population import Candidate, Islands, Store, StoreError, code_hash
from population.islands import RNG_KEY, source_distance

ROOT = Path(__file__).resolve().parents[1]

PROGRAM = '''\
"""Least-loaded routing."""
KNOBS = {"headroom": (0.6, 0.0, 2.0), "min_free": (-0.03, -1.0, 0.2)}


def route(queue, replicas, now, knobs):
    """Send each request to the least loaded replica."""
    out = []
    for req in queue:  # oldest first
        best = min(replicas, key=lambda r: len(r.pending) + len(r.active))
        out.append((req.id, best.id))
    return out
'''


def src(body: str = "x = 1", knobs: str = "") -> str:
    return (knobs + "\n" if knobs else "") + f"def route(queue, replicas, now, knobs):\n    {body}\n"


def ok(*, fitness: float, island: int = 0, source: str | None = None,
       **kw) -> Candidate:
    """An evaluated candidate with a unique source unless one is given."""
    ok.n += 1
    return Candidate(source=source if source is not None else src(f"return {ok.n}"),
                     island=island, fitness=fitness, status="ok", **kw)


ok.n = 0


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "state.sqlite")
    yield s
    s.close()


# ---------------------------------------------------------------------------- candidate

def test_candidate_json_round_trip():
    c = Candidate(id="c000042", source=PROGRAM, knobs={"headroom": 0.6}, parents=["c000001"],
                  island=2, generation=3, operator="crossover", model="gpt-x", fitness=1.7,
                  status="ok", metrics={"glia": {"mean_e2e_s": 24.1, "slo": float("nan")}},
                  reasoning="fewer restarts", rationale="reserve headroom", error=None,
                  code_hash="abc", created_at=1.5, evaluated_at=2.5, eval_seconds=0.9,
                  extra={"tokens": [1, 2]})
    back = Candidate.from_dict(json.loads(json.dumps(c.to_dict())))
    assert math.isnan(back.metrics["glia"].pop("slo"))
    c.metrics["glia"].pop("slo")
    assert back == c
    assert Candidate.from_dict({"id": "x", "source": "", "future_field": 1}).id == "x"
    with pytest.raises(ValueError, match="status"):
        Candidate(status="great")
    assert Candidate(status="ok", fitness=1.0).viable
    assert not Candidate(status="ok", fitness=0.0).viable
    assert not Candidate(status="ok", fitness=float("nan")).viable
    assert not Candidate(status="error", fitness=1.0).viable


# ---------------------------------------------------------------------------- code_hash

def test_hash_ignores_layout_comments_docstrings_and_knob_values():
    h = code_hash(PROGRAM)
    variants = [
        PROGRAM.replace("    ", "\t").replace("\n\n\n", "\n"),          # whitespace
        PROGRAM.replace("  # oldest first", "") + "# trailing comment\n",  # comments
        PROGRAM.replace('"""Least-loaded routing."""\n', "")              # module docstring
               .replace('    """Send each request to the least loaded replica."""\n', ""),
        PROGRAM.replace("(0.6, 0.0, 2.0)", "(1.25, 0.0, 2.0)")           # knob values
               .replace("(-0.03, -1.0, 0.2)", "(0.1, -1.0, 0.2)"),
        PROGRAM.replace("(req.id, best.id)", "(req.id,best.id)").replace("\n", "\r\n"),
        "\ufeff" + PROGRAM,
    ]
    for v in variants:
        assert code_hash(v) == h, v
    # a function that is only a docstring equals one that passes
    assert code_hash('def f():\n    "doc"\n') == code_hash("def f():\n    pass\n")
    assert code_hash('x = u"a"') == code_hash('x = "a"')
    assert len(h) == 64 and int(h, 16) >= 0


def test_hash_changes_with_any_real_code_change():
    h = code_hash(PROGRAM)
    changes = [
        PROGRAM.replace("len(r.pending) + len(r.active)", "len(r.pending)"),
        PROGRAM.replace("min(", "max("),
        PROGRAM.replace("best", "choice"),                              # renaming counts
        PROGRAM.replace("(0.6, 0.0, 2.0)", "(0.6, 0.0, 3.0)"),          # knob bound
        PROGRAM.replace('"headroom"', '"head_room"'),                   # knob name
        PROGRAM.replace("out = []", "out = []\n    out = []"),
        PROGRAM.replace('"""Send each', '"""Send each').replace("return out", "return out[:]"),
        PROGRAM + "\nX = 0.6\n",
        # a non-KNOBS dict keeps its values
        PROGRAM.replace("KNOBS = ", "OTHER = "),
    ]
    hashes = {code_hash(v) for v in changes}
    assert h not in hashes and len(hashes) == len(changes)
    # constants outside KNOBS count
    assert code_hash(src("return 1")) != code_hash(src("return 2"))


def test_hash_of_unparsable_source_uses_its_text():
    bad = "def f(:\n    return 1\n"
    assert code_hash(bad) == code_hash("def f(:   \n\n    return 1")
    assert code_hash(bad) != code_hash("def f(:\n    return 2\n")
    assert code_hash("x = 1\x00") != code_hash("x = 1")                  # null byte: no raise
    assert len(code_hash("(" * 5000 + ")" * 5000)) == 64                 # too deep: no raise
    assert len(code_hash("x = " + "1+" * 5000 + "1")) == 64              # RecursionError
    assert len(code_hash("x = " + "-" * 100000 + "1")) == 64             # MemoryError


# ---------------------------------------------------------------------------- store

def test_store_round_trip_wal_and_reopen(tmp_path):
    path = tmp_path / "run" / "state.sqlite"
    s = Store(path)
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    a = s.add(Candidate(source=PROGRAM, knobs={"headroom": 0.6}, island=1, operator="seed"))
    assert a.id == "c000001" and a.code_hash == code_hash(PROGRAM) and a.status == "pending"
    b = s.add(Candidate(source=src(), island=0, parents=[a.id], operator="llm", model="m"))
    a.status, a.fitness, a.metrics, a.evaluated_at = "ok", 1.3, {"glia": {"mean_e2e_s": 30.0}}, 9.0
    s.update(a)
    s.set_meta("budget", {"evaluations": 2, "cost_usd": 0.01})
    assert s.get(a.id) == a and s.get("nope") is None
    assert [c.id for c in s.all()] == [a.id, b.id]
    assert [c.id for c in s.by_island(1)] == [a.id]
    assert [c.id for c in s.by_status("pending")] == [b.id]
    assert s.has_hash(code_hash(PROGRAM)) and s.has_hash(a.code_hash, island=1)
    assert not s.has_hash(a.code_hash, island=0) and not s.has_hash("0" * 64)
    s.close()
    s.close()                                           # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.get(a.id)

    with Store(path, create=False) as s2:
        assert s2.get(a.id) == a and s2.get(b.id) == b and len(s2) == 2
        assert s2.count("ok") == 1
        assert s2.get_meta("budget") == {"evaluations": 2, "cost_usd": 0.01}
        assert s2.get_meta("missing", 7) == 7
        assert s2.next_id() == "c000003"               # counter survived the reopen


def test_store_ids_errors_and_nan(store):
    store.add(Candidate(id="c000002", source="x = 1"))
    assert [store.next_id() for _ in range(2)] == ["c000001", "c000003"]   # skips taken ids
    with pytest.raises(StoreError, match="already exists"):
        store.add(Candidate(id="c000002", source="y = 2"))
    with pytest.raises(StoreError, match="no candidate"):
        store.update(Candidate(id="c999999", source="x"))
    c = store.add(Candidate(source="z = 3", status="ok", fitness=float("nan")))
    assert math.isnan(store.get(c.id).fitness)
    with pytest.raises(TypeError):
        store.set_meta("bad", object())


def test_store_is_safe_to_share_between_threads(store):
    import threading

    def work(t):
        for i in range(25):
            with store.transaction():
                c = store.add(Candidate(source=f"x = {t * 100 + i}"))
                store.set_meta(f"last{t}", c.id)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [c.id for c in store.all()]
    assert len(ids) == len(set(ids)) == 100 and store.next_id() == "c000101"


def test_transaction_is_atomic_and_nests(store):
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.add(Candidate(id="a", source="a = 1"))
            store.set_meta("k", 1)
            raise RuntimeError("boom")
    assert store.get("a") is None and store.get_meta("k") is None
    with store.transaction():
        store.add(Candidate(id="b", source="b = 1"))
        with pytest.raises(KeyError):
            with store.transaction():                  # inner savepoint undone alone
                store.add(Candidate(id="c", source="c = 1"))
                raise KeyError("inner")
        store.set_meta("k", 2)
    assert store.get("b") is not None and store.get("c") is None
    assert store.get_meta("k") == 2


def test_missing_foreign_and_corrupted_files(tmp_path):
    with pytest.raises(StoreError, match="no such state file"):
        Store(tmp_path / "absent.sqlite", create=False)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(os.urandom(8192))
    with pytest.raises(StoreError, match=r"junk\.sqlite.*(corrupted|not SQLite)"):
        Store(junk)
    text = tmp_path / "notes.sqlite"
    text.write_text("hello, this is not a database\n" * 200)
    with pytest.raises(StoreError, match="notes.sqlite"):
        Store(text)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE foo (x)").connection.commit()
    with pytest.raises(StoreError, match="not a glia-evo state file"):
        Store(other)
    with pytest.raises(StoreError, match="directory"):
        Store(tmp_path)

    # a real state file with damaged pages (header intact)
    broken = tmp_path / "broken.sqlite"
    with Store(broken) as s:
        for i in range(200):
            s.add(Candidate(source=f"x = {i}\n" + "# pad\n" * 50, metrics={"m": {"v": i}}))
    raw = bytearray(broken.read_bytes())
    assert len(raw) > 16 * 4096
    rnd = np.random.default_rng(0)
    raw[4096:len(raw) - 4096] = rnd.integers(0, 256, len(raw) - 8192, dtype=np.uint8).tobytes()
    broken.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match=r"broken\.sqlite"):
        Store(broken)


_KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from population import Candidate, Store
    path, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    s = Store(path)
    for i in range(n):
        s.add(Candidate(source=f"def route(q, r, now, knobs):\\n    return {i}\\n",
                        metrics={"glia": {"i": i}}))
    s.set_meta("written", n)
    if mode == "open-transaction":
        tx = s.transaction()
        tx.__enter__()
        s.add(Candidate(id="uncommitted", source="x = 1"))
        s.set_meta("written", -1)
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.parametrize("mode", ["committed", "open-transaction"])
def test_committed_writes_survive_sigkill(tmp_path, mode):
    path = tmp_path / "state.sqlite"
    n = 40
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(path), str(n), mode],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert Path(str(path) + "-wal").exists()            # died without a clean close
    with Store(path, create=False) as s:
        got = s.all()
        assert [c.metrics["glia"]["i"] for c in got] == list(range(n))
        assert s.get("uncommitted") is None
        assert s.get_meta("written") == n
        assert s.next_id() == f"c{n + 1:06d}"


# ---------------------------------------------------------------------------- islands

def test_failures_are_stored_but_not_members(store):
    isl = Islands(store, 2, 3, rng=0)
    for status in ("error", "timeout", "crashed", "invalid"):
        c = Candidate(source=src(f"raise {status!r}"), status=status, error="x")
        assert isl.insert(c) is False and store.get(c.id).status == status
    assert isl.insert(ok(fitness=0.0)) is False
    assert isl.sizes() == [0, 0]
    with pytest.raises(LookupError):
        isl.select_parent(0)
    assert isl.best() is None and isl.inspirations(0, None) == []
    with pytest.raises(ValueError):
        isl.insert(ok(fitness=1.0, island=2))


def test_capacity_replaces_worst_keeps_elite_and_older_on_ties(store):
    isl = Islands(store, 1, 3, rng=0)
    a, b, c = ok(fitness=2.0), ok(fitness=1.0), ok(fitness=1.5)
    assert all(isl.insert(x) for x in (a, b, c))
    ids = lambda: {m.id for m in isl.members(0)}          # noqa: E731
    assert isl.insert(ok(fitness=1.0)) is False             # ties the worst: the older stays
    assert ids() == {a.id, b.id, c.id}
    d = ok(fitness=1.2)
    assert isl.insert(d) is True and ids() == {a.id, c.id, d.id}   # b (worst) replaced
    assert isl.insert(ok(fitness=0.5)) is False
    # three equal members: a newcomer that beats them evicts the newest, never the best (oldest)
    s2 = Islands(Store(store.path.with_name("b.sqlite")), 1, 3, rng=0)
    e = [ok(fitness=1.0) for _ in range(3)]
    for x in e:
        s2.insert(x)
    assert s2.best().id == e[0].id
    assert s2.insert(ok(fitness=1.1))
    assert {m.id for m in s2.members(0)} == {e[0].id, e[1].id} | {s2.best().id}
    # the best is never evicted: fill with better ones, best fitness never decreases
    best_so_far = 0.0
    rnd = np.random.default_rng(1)
    for _ in range(60):
        isl.insert(ok(fitness=float(rnd.uniform(0.1, 3.0))))
        assert len(isl.members(0)) <= 3
        assert isl.best().fitness >= best_so_far
        best_so_far = isl.best().fitness
    s2.store.close()


def test_same_code_hash_keeps_one_member_the_fitter(store):
    isl = Islands(store, 1, 5, rng=0)
    base = src("return knobs['a']", knobs='KNOBS = {"a": (1.0, 0.0, 5.0)}')
    p = ok(fitness=1.0, source=base)
    assert isl.insert(p)
    worse = ok(fitness=0.9, source=base.replace("(1.0,", "(2.0,"), operator="tune")
    assert not isl.insert(worse)
    tuned = ok(fitness=1.4, source=base.replace("(1.0,", "(3.0,"), operator="tune",
               parents=[p.id])
    assert isl.insert(tuned)
    assert [m.id for m in isl.members(0)] == [tuned.id]


def test_code_hashes_name_the_latest_candidate_of_each_hash(store):
    isl = Islands(store, 1, 5, rng=0)
    base = src("return knobs['a']", knobs='KNOBS = {"a": (1.0, 0.0, 5.0)}')
    first, other = ok(fitness=1.0, source=base), ok(fitness=0.5, source=src("return 0.0"))
    retuned = ok(fitness=1.2, source=base.replace("(1.0,", "(2.0,"), operator="tune")
    for c in (first, other, retuned):
        isl.insert(c)
    assert first.code_hash == retuned.code_hash != other.code_hash
    assert store.code_hashes() == {first.code_hash: retuned.id, other.code_hash: other.id}
    assert store.code_hashes() == {c.code_hash: c.id for c in store.all()}


def test_membership_is_reconstructed_from_the_store(tmp_path):
    path = tmp_path / "state.sqlite"
    s = Store(path)
    isl = Islands(s, 3, 2, rng=5)
    rnd = np.random.default_rng(3)
    for i in range(30):
        isl.insert(ok(fitness=float(rnd.uniform(0.1, 2)), island=i % 3))
    isl.migrate(1)
    before = [[m.id for m in isl.members(i)] for i in range(3)]
    s.close()
    s = Store(path)
    again = Islands(s, 3, 2, rng=999)
    assert [[m.id for m in again.members(i)] for i in range(3)] == before
    # smaller capacity on resume trims the worst, keeps the best
    best = [again.best(i).id for i in range(3)]
    s.close()
    s = Store(path)
    smaller = Islands(s, 3, 1, rng=0)
    assert [[m.id for m in smaller.members(i)] for i in range(3)] == [[b] for b in best]
    with pytest.raises(ValueError, match="islands"):
        Islands(s, 2, 1)
    s.close()


def _tournament_store(store, n=10, seed=42):
    isl = Islands(store, 1, n, rng=seed)
    cands = [ok(fitness=float(f)) for f in range(1, n + 1)]
    for c in cands:
        assert isl.insert(c)
    return isl, {c.id: i + 1 for i, c in enumerate(cands)}          # id -> fitness rank


def test_tournament_selection_is_biased_to_fitter_members(store):
    isl, rank = _tournament_store(store)
    draws = 1500
    wins = Counter(rank[isl.select_parent(0).id] for _ in range(draws))
    # size-3 tournaments without replacement: the two worst can never win
    assert wins[1] == wins[2] == 0
    # P(rank r wins) = C(r-1, 2) / C(10, 3); the best wins 30 % of the time
    for r in range(3, 11):
        expected = math.comb(r - 1, 2) / math.comb(10, 3)
        assert abs(wins[r] / draws - expected) < 0.04, (r, wins[r] / draws, expected)
    mean = sum(r * w for r, w in wins.items()) / draws
    assert mean > 7.5                                       # uniform would be 5.5
    # a tournament as large as the island always picks the best
    assert Islands(store, 1, 10, rng=0, tournament_size=10).select_parent(0).fitness == 10.0


def test_selection_is_deterministic_and_resumes_its_sequence(tmp_path):
    def run(path, seed, k):
        s = Store(path)
        isl, _ = _tournament_store(s, seed=seed)
        out = [isl.select_parent(0).id for _ in range(k)]
        return s, isl, out

    s1, _, seq1 = run(tmp_path / "a.sqlite", 7, 40)
    s2, _, seq2 = run(tmp_path / "b.sqlite", 7, 40)
    s3, _, seq3 = run(tmp_path / "c.sqlite", 8, 40)
    assert seq1 == seq2 and seq1 != seq3
    for s in (s1, s2, s3):
        s.close()

    # 20 selections, "crash", reopen with another seed: the stored state wins
    path = tmp_path / "d.sqlite"
    s, isl, first = run(path, 7, 20)
    assert first == seq1[:20]
    state = s.get_meta(RNG_KEY)
    assert state["bit_generator"] == "PCG64"
    s.close()
    s = Store(path)
    reader = Islands.from_store(Store(path))                # e.g. `status`: writes nothing
    assert (reader.num_islands, reader.capacity, reader.tournament_size) == (1, 10, 3)
    reader.store.close()
    assert s.get_meta(RNG_KEY) == state
    resumed = Islands(s, 1, 10, rng=12345)
    assert [resumed.select_parent(0).id for _ in range(20)] == seq1[20:]
    s.close()


def test_migration_along_the_ring_skips_duplicates(store):
    isl = Islands(store, 3, 4, rng=0)
    shared = src("return 'shared'")
    a0 = ok(fitness=3.0, island=0)
    a1 = ok(fitness=2.0, island=0)
    isl.insert(a0), isl.insert(a1), isl.insert(ok(fitness=0.5, island=0))
    b0 = ok(fitness=2.5, island=1, source=shared)
    isl.insert(b0)
    isl.insert(ok(fitness=1.0, island=1))
    c0 = ok(fitness=1.5, island=2, source=shared)             # same code as b0
    isl.insert(c0)
    migrants = isl.migrate(2)
    by_dest = {}
    for m in migrants:
        by_dest.setdefault(m.island, []).append(m)
        assert m.operator == "migration" and m.status == "ok" and len(m.parents) == 1
        orig = store.get(m.parents[0])
        assert (m.source, m.knobs, m.fitness, m.metrics, m.code_hash) == \
               (orig.source, orig.knobs, orig.fitness, orig.metrics, orig.code_hash)
        assert m.id != orig.id and m.extra["migrated_from"] == orig.island
        assert (orig.island + 1) % 3 == m.island
        assert store.get(m.id) == m
    # island 0 -> 1: its best two
    assert sorted(store.get(m.parents[0]).id for m in by_dest[1]) == sorted([a0.id, a1.id])
    # island 1 -> 2: b0 has c0's code (and is fitter: replaces it); the other one moves
    dest2 = {m.parents[0] for m in by_dest[2]}
    assert b0.id in dest2
    hashes2 = [m.code_hash for m in isl.members(2)]
    assert len(hashes2) == len(set(hashes2))
    assert c0.id not in {m.id for m in isl.members(2)}
    # island 2 -> 0: c0 (snapshot taken before anything moved) goes to island 0
    assert [m.parents[0] for m in by_dest[0]][0] == c0.id
    # migrants travel one step per call; repeated migration spreads the best codes around the
    # ring without ever duplicating a code on an island, then stops adding anything
    rounds = []
    for _ in range(6):
        rounds.append(len(isl.migrate(2)))
        for i in range(3):
            hashes = [m.code_hash for m in isl.members(i)]
            assert len(hashes) == len(set(hashes))
    assert rounds[0] > 0 and rounds[-2:] == [0, 0]
    top_codes = {a0.code_hash, b0.code_hash}
    assert all(top_codes <= {m.code_hash for m in isl.members(i)} for i in range(3))
    # leaderboard has no migration copies
    board = isl.leaderboard(3)
    assert [c.id for c in board] == [a0.id, b0.id, a1.id]
    assert Islands(store, 3, 4).migrate(0) == []


def test_migration_with_one_island_or_full_destination(store):
    assert Islands(store, 1, 2, rng=0).migrate(3) == []
    s2 = Store(store.path.with_name("two.sqlite"))
    isl = Islands(s2, 2, 1, rng=0)
    isl.insert(ok(fitness=1.0, island=0))
    strong = ok(fitness=5.0, island=1)
    isl.insert(strong)
    migrants = isl.migrate(1)
    # 0 -> 1 not admitted (full, weaker): not even stored; 1 -> 0 replaces the weaker one
    assert [m.parents for m in migrants] == [[strong.id]]
    assert isl.best(0).fitness == 5.0 and isl.best(1).id == strong.id
    s2.close()


def test_inspirations_are_best_and_most_different(store):
    isl = Islands(store, 1, 10, rng=0)
    lines = "\n".join(f"    v{i} = len(queue) + {i}" for i in range(12))
    parent = ok(fitness=1.0, source=f"def route(queue, replicas, now, knobs):\n{lines}\n"
                                    "    return []\n")
    near = ok(fitness=1.2, source=parent.source.replace("+ 3", "+ 33"))
    far = ok(fitness=0.8, source="def route(queue, replicas, now, knobs):\n"
                                  "    return [(q.id, replicas[0].id) for q in queue]\n")
    top = ok(fitness=2.0, source=parent.source.replace("+ 5", "+ 55"))
    for c in (parent, near, far, top):
        assert isl.insert(c)
    got = isl.inspirations(0, parent)
    assert [c.id for c in got] == [top.id, far.id]
    assert [c.id for c in isl.inspirations(0, parent.id, n=3)] == [top.id, far.id, near.id]
    assert [c.id for c in isl.inspirations(0, top, n=1)] == [near.id]
    assert source_distance(parent.source, parent.source) == 0.0
    assert source_distance(parent.source, far.source) > source_distance(parent.source,
                                                                        near.source)


def test_insert_is_one_transaction_with_the_result(store):
    isl = Islands(store, 1, 2, rng=0)
    pending = store.add(Candidate(source=src("return 'p'")))
    pending.status, pending.fitness, pending.reasoning = "ok", 1.1, "good"
    assert isl.insert(pending)                             # updates the stored pending record
    assert len(store) == 1 and store.get(pending.id).reasoning == "good"
    assert isl.insert(pending)                             # re-insert of a member: stays
    pending.status, pending.fitness = "error", 0.0
    assert not isl.insert(pending) and isl.members(0) == []
