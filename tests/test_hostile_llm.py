"""A whole `glia-evo run --llm openai` against the scripted loopback server, where both the
"model" and the candidates it writes are hostile: the answers carry the run's API key (a server
knows it from the Authorization header), terminal escapes and bidi overrides; the candidate
program assembles the key at run time and raises it inside an escape sequence. Afterwards no
file of the run (state, events, MLflow store and artifacts, best.py, the report), nothing
printed, and no request the server received (but the Authorization header) holds the key,
and no raw ESC / BEL reached the terminal, the event log or a request."""
import json
from pathlib import Path

import llm_scripts
from test_llm_run import run
from llm_server import Reply, ScriptedServer
from population import Store

KEY = "sk-HOSTILE-7e3a9c-glia-never-leak"
HALF = len(KEY) // 2
CONTROL = ("\x1b", "\x07", "\u202e")

# a routing program whose every call fails with the key, assembled at run time, in an escape
HOSTILE_PROGRAM = f'''
def route(queue, replicas, now, knobs):
    secret = "{KEY[:HALF]}" + "{KEY[HALF:]}"
    raise ValueError("\\x1b]0;owned\\x07\\x1b[2J" + secret + "\\u202e")
'''


def hostile_answer(record: dict) -> Reply:
    return Reply(f"HYPOTHESIS: \x1b[31mleak {KEY}\x07 now\u202e.\nRATIONALE: the key is "
                 f"{KEY}.\n\n```python\n{HOSTILE_PROGRAM}```\n")


def files_of(root: Path):
    for path in root.rglob("*"):
        if path.is_file():
            yield path


def test_a_hostile_model_and_candidate_leak_no_key_and_no_escapes(tmp_path):
    with ScriptedServer() as server:
        llm_scripts.install_defaults(server)
        server.script("researcher", [hostile_answer, hostile_answer,
                                     lambda r: Reply(llm_scripts.child_answer(r))])
        server.default("analyst", lambda r: Reply(f"ANALYST: it failed \x1b[2J{KEY}\x07"))
        server.default("supervisor", lambda r: Reply(f"NOTES: \x1b]52;c;{KEY}\x07 go on"))
        proc, out = run(tmp_path, server, evals=6, supervise=3, key=KEY, retries=1)
        requests = list(server.requests)
    assert proc.returncode == 0, proc.stderr

    # the hostile program was evaluated and failed with its message cleaned
    store = Store(out / "state.sqlite", create=False)
    try:
        cands = store.all()
    finally:
        store.close()
    failed = [c for c in cands if c.operator == "llm" and c.status == "error"]
    assert failed, [(c.operator, c.status, c.error) for c in cands]
    assert all("[redacted]" in c.error and "\\x1b" in c.error for c in failed)
    assert all(ch not in (c.error or "") + c.rationale + c.extra.get("hypothesis", "")
               for c in cands for ch in CONTROL)

    # the key is nowhere: output, files of the run, requests (except the key's own header)
    assert KEY not in proc.stdout + proc.stderr
    for ch in CONTROL:
        assert ch not in proc.stdout + proc.stderr
    leaked = [p for p in files_of(out) if KEY.encode() in p.read_bytes()]
    assert not leaked, leaked
    assert not [p for p in files_of(out) if b"\x1b" in p.read_bytes()
                and p.suffix in (".jsonl", ".py", ".md", ".txt", ".json")]
    assert len(requests) >= 3
    for r in requests:
        body = json.dumps(r["body"], ensure_ascii=False)
        assert KEY not in body, r["role"]
        assert not any(ch in body for ch in CONTROL), r["role"]
        assert r["authorization"] == f"Bearer {KEY}"
    assert any(r["role"] == "analyst" for r in requests)
