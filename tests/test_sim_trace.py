"""Workloads: trace parsing (both CSV formats, row-precise errors), packaged traces, generators."""
from __future__ import annotations

import re

import numpy as np
import pytest

from sim import RequestSpec, TraceError, load_trace
from sim import workload as wl

AZ = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
VI = "arrived_at,num_prefill_tokens,num_decode_tokens\n"


@pytest.fixture
def write(tmp_path):
    counter = iter(range(10**6))

    def make(text: str, name: str | None = None, mode: str = "w"):
        path = tmp_path / (name or f"trace{next(counter)}.csv")
        if mode == "wb":
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path
    return make


def trace_error(path) -> str:
    with pytest.raises(TraceError) as info:
        load_trace(path)
    return str(info.value)


def assert_row(message: str, row: int) -> None:
    assert re.search(rf"\brow {row}\b", message), message


# --- the two formats ---------------------------------------------------------------------------

def test_azure_format_rebased_and_lengths(write):
    path = write(AZ + "2023-11-16 18:17:03.9799600,4808,10\n"
                      "2023-11-16 18:17:04.0319600,3180,8\n"
                      "2023-11-16 18:17:05.5000000,17,1\n")
    reqs = load_trace(path)
    assert [(r.prompt_tokens, r.output_tokens) for r in reqs] == [(4808, 10), (3180, 8), (17, 1)]
    assert reqs[0].arrival_s == 0.0
    assert reqs[1].arrival_s == pytest.approx(0.052, abs=1e-6)
    assert reqs[2].arrival_s == pytest.approx(1.52004, abs=1e-6)
    assert all(isinstance(r, RequestSpec) for r in reqs)


def test_azure_timestamps_across_midnight_and_without_fraction(write):
    path = write(AZ + "2023-11-16 23:59:59.9000000,10,5\n"
                      "2023-11-17 00:00:00,11,6\n"
                      "2023-11-17 00:01:00.1000000,12,7\n")
    times = [r.arrival_s for r in load_trace(path)]
    assert times == pytest.approx([0.0, 0.1, 60.2], abs=1e-6)


def test_azure_seven_digit_fractions_are_kept(write):
    """The 7th fractional digit (100 ns) survives the conversion to relative seconds."""
    path = write(AZ + "2023-11-16 18:17:03.9799600,10,5\n"
                      "2023-11-16 18:17:03.9799601,10,5\n"
                      "2023-11-16 18:17:04.0319600,10,5\n")
    times = [r.arrival_s for r in load_trace(path)]
    assert times[0] == 0.0
    assert times[1] == pytest.approx(1e-7, abs=1e-9)
    assert times[2] == pytest.approx(0.052, abs=1e-9)


def test_vidur_format_with_extra_columns(write):
    path = write("arrived_at,num_prefill_tokens,num_decode_tokens,prefill_inflated,decode_inflated\n"
                 "10.5,216,97,0,0\n"
                 "10.75,14,273,1,0\n"
                 "12.0,8181,11,0,1\n")
    reqs = load_trace(path)
    assert [(r.arrival_s, r.prompt_tokens, r.output_tokens) for r in reqs] == \
        [(0.0, 216, 97), (0.25, 14, 273), (1.5, 8181, 11)]


def test_arrivals_sorted_and_rebased(write):
    path = write(VI + "5.0,50,5\n3.0,30,3\n4.0,40,4\n3.5,35,3\n")
    reqs = load_trace(path)
    assert [r.arrival_s for r in reqs] == [0.0, 0.5, 1.0, 2.0]
    assert [r.prompt_tokens for r in reqs] == [30, 35, 40, 50]   # lengths travel with their row
    assert [r.output_tokens for r in reqs] == [3, 3, 4, 5]
    az = write(AZ + "2023-11-16 18:00:02.0000000,2,1\n2023-11-16 18:00:01.0000000,1,1\n")
    reqs = load_trace(az)
    assert [(r.arrival_s, r.prompt_tokens) for r in reqs] == [(0.0, 1), (pytest.approx(1.0), 2)]


def test_blank_lines_are_skipped_and_do_not_shift_row_numbers(write):
    path = write(VI + "0.0,1,1\n\n0.5,2,2\n0.6,x,2\n")
    assert_row(trace_error(path), 5)
    ok = write(VI + "0.0,1,1\n\n0.5,2,2\n")
    assert len(load_trace(ok)) == 2


def test_integral_float_token_counts_are_accepted(write):
    path = write(VI + "0.0,12.0,3\n")
    assert [(r.prompt_tokens, r.output_tokens) for r in load_trace(path)] == [(12, 3)]


# --- bad rows: TraceError naming the row --------------------------------------------------------

GOOD_V = "0.0,10,5\n0.5,11,6\n"
GOOD_A = "2023-11-16 18:17:03.9799600,10,5\n2023-11-16 18:17:04.0000000,11,6\n"


@pytest.mark.parametrize("bad,words", [
    ("1.0,abc,5", "num_prefill_tokens"),
    ("1.0,10,xyz", "num_decode_tokens"),
    ("1.0,-5,5", "num_prefill_tokens"),
    ("1.0,10,-1", "num_decode_tokens"),
    ("1.0,0,5", "num_prefill_tokens"),
    ("1.0,10,0", "num_decode_tokens"),
    ("1.0,2.5,5", "num_prefill_tokens"),
    ("1.0,,5", "num_prefill_tokens"),
    ("1.0,nan,5", "num_prefill_tokens"),
    ("1.0,10", "columns"),
    ("1.0", "columns"),
    ("soon,10,5", "arrived_at"),
    ("-1.0,10,5", "arrived_at"),
    ("nan,10,5", "arrived_at"),
    ("inf,10,5", "arrived_at"),
])
def test_vidur_bad_row_names_its_row(write, bad, words):
    path = write(VI + GOOD_V + bad + "\n" + "2.0,3,3\n")
    msg = trace_error(path)
    assert_row(msg, 4)
    assert words in msg
    assert str(path.name) in msg


@pytest.mark.parametrize("bad", ["1.0,inf,5", "1.0,10,1e400", "1.0,-inf,5"])
def test_infinite_token_counts_raise_trace_error(write, bad):
    """'inf' is not a token count: TraceError with the row, not a bare OverflowError."""
    path = write(VI + GOOD_V + bad + "\n")
    assert_row(trace_error(path), 4)


@pytest.mark.parametrize("bad,words", [
    ("2023-11-16 18:17:05.0000000,abc,5", "ContextTokens"),
    ("2023-11-16 18:17:05.0000000,10,0", "GeneratedTokens"),
    ("2023-11-16 18:17:05.0000000,-3,4", "ContextTokens"),
    ("yesterday,10,5", "TIMESTAMP"),
    ("2023-13-45 18:17:05.0000000,10,5", "TIMESTAMP"),
    ("2023-11-16 18:17:05.0000000,10", "columns"),
    ("", None),  # blank: skipped, the next (bad) row is row 5
])
def test_azure_bad_row_names_its_row(write, bad, words):
    if words is None:
        path = write(AZ + GOOD_A + bad + "\n" + "nope,1,1\n")
        assert_row(trace_error(path), 5)
        return
    path = write(AZ + GOOD_A + bad + "\n")
    msg = trace_error(path)
    assert_row(msg, 4)
    assert words in msg


def test_first_data_row_is_row_2(write):
    assert_row(trace_error(write(VI + "0.0,0,1\n")), 2)
    assert_row(trace_error(write(AZ + "2023-11-16 18:17:05,1\n")), 2)


def test_unknown_header(write):
    msg = trace_error(write("time,prompt,output\n0.0,1,1\n"))
    assert_row(msg, 1)
    assert "header" in msg


def test_empty_file_header_only_and_missing_file(write, tmp_path):
    assert "empty" in trace_error(write(""))
    assert trace_error(write(VI))  # a header and no rows
    assert trace_error(write(AZ + "\n\n"))
    missing = tmp_path / "nope.csv"
    assert "not found" in trace_error(missing)
    assert trace_error(tmp_path)  # a directory is not a trace


def test_binary_file_is_a_trace_error(write):
    assert trace_error(write(b"\xff\xfe\x00\x81garbage\n", mode="wb"))


def test_trace_error_is_a_value_error():
    assert issubclass(TraceError, ValueError)


def test_edited_file_is_reread(write):
    path = write(VI + "0.0,1,1\n")
    assert len(load_trace(path)) == 1
    path.write_text(VI + "0.0,1,1\n1.0,2,2\n")
    import os
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert len(load_trace(path)) == 2


def test_returned_list_is_a_copy(write):
    path = write(VI + "0.0,1,1\n1.0,2,2\n")
    first = load_trace(path)
    first.clear()
    assert len(load_trace(path)) == 2


# --- packaged traces ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,count", [
    ("glia_routing/first_turn_seed0.csv", 8240),
    ("glia_routing/first_turn_seed1.csv", 7097),
    ("azure_llm_2023/code.csv", 8819),
    ("azure_llm_2023/conv.csv", 19366),
])
def test_packaged_traces_load(name, count):
    reqs = wl.packaged_trace(name)
    assert len(reqs) == count
    times = np.array([r.arrival_s for r in reqs])
    assert times[0] == 0.0 and np.all(np.diff(times) >= 0)
    assert all(r.prompt_tokens >= 1 and r.output_tokens >= 1 for r in reqs)
    if name.startswith("glia"):
        assert 990 < times[-1] < 1000
        assert max(r.prompt_tokens + r.output_tokens for r in reqs) <= wl.MAX_CONTEXT_TOKENS
    else:
        assert 50 * 60 < times[-1] < 60 * 60


# --- generators --------------------------------------------------------------------------------

def test_poisson_rate_and_shape():
    t = wl.poisson_arrivals(5.0, 2000.0, seed=1)
    assert 0.95 * 10_000 < len(t) < 1.05 * 10_000
    assert t[0] == 0.0 and np.all(np.diff(t) >= 0) and t[-1] < 2000.0
    gaps = np.diff(t)
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(1.0, abs=0.1)  # exponential: CV 1


@pytest.mark.parametrize("sigma,tol", [(1.0, 0.1), (2.0, 0.4)])
def test_lognormal_rate(sigma, tol):
    counts = [len(wl.lognormal_arrivals(7.5, sigma, 1000.0, seed=s)) for s in range(4)]
    assert (1 - tol) * 7500 < np.mean(counts) < (1 + tol) * 7500
    t = wl.lognormal_arrivals(7.5, sigma, 1000.0, seed=0)
    assert t[0] == 0.0 and np.all(np.diff(t) >= 0) and t[-1] < 1000.0


def test_lognormal_sigma_makes_bursts():
    calm = np.diff(wl.lognormal_arrivals(5.0, 0.5, 2000.0, seed=3))
    bursty = np.diff(wl.lognormal_arrivals(5.0, 2.0, 2000.0, seed=3))
    assert np.std(bursty) / np.mean(bursty) > 2 * np.std(calm) / np.mean(calm)


@pytest.mark.parametrize("gen", [
    lambda s: wl.poisson_arrivals(3.0, 300.0, s),
    lambda s: wl.lognormal_arrivals(3.0, 2.0, 300.0, s),
    lambda s: wl.varying_rate_arrivals(lambda t: 1.0 + t / 100.0, 4.0, 300.0, s),
    lambda s: np.array(wl.resample_lengths(wl.packaged_trace("azure_llm_2023/code.csv"), 500, s)),
    lambda s: np.array(wl.inflate([(100, 200)] * 500, s)),
])
def test_generators_seeded(gen):
    a, b, c = gen(42), gen(42), gen(43)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_bad_rates_rejected():
    with pytest.raises(ValueError):
        wl.poisson_arrivals(0.0, 10.0, 0)
    with pytest.raises(ValueError):
        wl.lognormal_arrivals(-1.0, 2.0, 10.0, 0)
    with pytest.raises(ValueError):
        wl.scale_rate([RequestSpec(0.0, 1, 1)], 0.0)


def test_varying_rate_follows_rate_function():
    t = wl.varying_rate_arrivals(lambda x: 2.0 if x < 500 else 8.0, 8.0, 1000.0, seed=5)
    first, second = np.sum(t < 500), np.sum(t >= 500)
    assert 0.85 * 1000 < first < 1.15 * 1000
    assert 0.9 * 4000 < second < 1.1 * 4000


def test_resample_keeps_pairs_together():
    pool = [RequestSpec(0.0, p, 1000 + p) for p in range(1, 50)]
    pairs = wl.resample_lengths(pool, 300, seed=0)
    assert len(pairs) == 300 and all(o == 1000 + p for p, o in pairs)
    assert len(set(pairs)) > 30


def test_inflate_rule():
    n = 20_000
    pairs = [(50 + i % 7, 60 + i % 11) for i in range(n)]
    out = wl.inflate(pairs, seed=9)
    grown_p = [a != b for (a, _), (b, _) in zip(pairs, out)]
    grown_o = [a != b for (_, a), (_, b) in zip(pairs, out)]
    assert 0.04 < np.mean(grown_p) < 0.06
    assert 0.04 < np.mean(grown_o) < 0.06
    both = np.mean(np.logical_and(grown_p, grown_o))
    assert 0.0010 < both < 0.0050           # independent: about 0.05 * 0.05
    for (p, o), (p2, o2), gp, go in zip(pairs, out, grown_p, grown_o):
        assert p2 == (10 * p if gp else p)
        assert o2 == (10 * o if go else o)


def test_inflate_respects_context():
    pairs = [(1000 + i % 900, 3000 + i % 1100) for i in range(5000)]
    out = wl.inflate(pairs, seed=1)
    assert all(p >= 1 and o >= 1 and p + o <= 8192 for p, o in out)
    assert any(p == 8191 for p, _ in out)     # inflated prompts clipped to the context
    assert sum(1 for (p, _), (p2, _) in zip(pairs, out) if p2 != p) > 100


def test_scale_rate_doubles_rate():
    base = wl.window(wl.glia_workload(0), 0, 200)
    fast = wl.scale_rate(base, 2.0)
    assert len(fast) == len(base)
    assert [r.arrival_s for r in fast] == pytest.approx([r.arrival_s / 2 for r in base])
    assert [(r.prompt_tokens, r.output_tokens) for r in fast] == \
        [(r.prompt_tokens, r.output_tokens) for r in base]
    assert len(wl.window(fast, 0, 100)) == len(base)   # twice the requests per second


def test_window_rebases_and_filters():
    reqs = [RequestSpec(t, 1, 1) for t in (0.0, 1.0, 2.0, 3.0, 4.0)]
    assert [r.arrival_s for r in wl.window(reqs, 1.0, 3.0)] == [0.0, 1.0]


def test_glia_workload_seeds():
    assert wl.glia_workload(0) == wl.packaged_trace("glia_routing/first_turn_seed0.csv")
    assert wl.glia_workload(1) == wl.packaged_trace("glia_routing/first_turn_seed1.csv")
    a, b, c = wl.glia_workload(2), wl.glia_workload(2), wl.glia_workload(3)
    assert a == b and a != c
    assert a != wl.glia_workload(0)
    assert 0.6 * 7500 < len(a) < 1.4 * 7500
    times = [r.arrival_s for r in a]
    assert times[0] == 0.0 and times == sorted(times) and times[-1] < 1000.0
    assert all(1 <= r.prompt_tokens and 1 <= r.output_tokens and
               r.prompt_tokens + r.output_tokens <= 8192 for r in a)
    # regenerated, not replayed, when the parameters differ from the shipped traces
    assert wl.glia_workload(0, rate=7.0) != wl.glia_workload(0)
