"""Two layers for every attack: with the language layer's curation switched off
(`sandbox.guards._CURATED = False`, the old module proxies), the `functools.singledispatch`
escape runs arbitrary Python in the job process; the kernel layer alone must still contain the
file, network, process, signal and secret attacks. The same escapes with the kernel layer off
(`WorkerPool(kernel_layer=False)`) really do delete, read and leak, so the test shows the kernel
layer is what stopped them (only attacks that cannot hurt the test run are tried that way)."""
from __future__ import annotations

import os
import secrets
import socket

import pytest

from glia_evo.evaluation.parallel import evaluate_many
from glia_evo.problems import get_problem
from sandbox import WorkerPool, guards
from test_hostile import TINY, live_descendants

ROUTING = get_problem("routing")
SECRET_VAR = "GLIA_KERNEL_ONLY_SECRET"

# typing.get_type_hints evaluates the annotation with plain eval: G is the os module's globals
TEMPLATE = '''
import functools

G = "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]" \\
    ".__init__.__globals__"


def route(queue, replicas, now, knobs):
    dispatch = functools.singledispatch(lambda x: x)

    def handler(x: "(lambda G: {action})(" + G + ")"):
        return x

    dispatch.register(handler)
    return [(q.id, 0) for q in queue]
'''


def leak(expr: str) -> str:
    """An action that raises the value of `expr`, so it reaches the candidate's error."""
    return f"(_ for _ in ()).throw(ValueError('LEAK[' + str({expr}) + ']'))"


ATTACKS = {
    "delete": "G['remove']('{canary}')",
    "truncate": "G['close'](G['open']('{canary}', G['O_WRONLY'] | G['O_TRUNC']))",
    "rename": "G['rename']('{canary}', '{canary}.moved')",
    "read_file": leak("G['read'](G['open']('{canary}', G['O_RDONLY']), 100)"),
    "env_secret": leak("G['environ'].get('" + SECRET_VAR + "')"),
    "proc_secret": leak("G['read'](G['open']('/proc/%d/environ' % G['getppid'](), "
                        "G['O_RDONLY']), 100000)"),
    "socket": "G['sys'].modules['builtins'].__import__('socket').create_connection("
              "('127.0.0.1', {port}), 2).sendall(b'escaped')",
    "fork": "G['fork']() or G['fork']()",
    "kill_parent": "G['kill'](G['getppid'](), 9)",
    "exec": "G['execv']('/bin/true', ['true'])",
}


def program(action: str, canary, port: int) -> str:
    return TEMPLATE.replace("{action}", ATTACKS[action].format(canary=canary, port=port))


@pytest.fixture
def stage(tmp_path, monkeypatch):
    monkeypatch.setattr(guards, "_CURATED", False)
    canary = tmp_path / "canary.txt"
    content = "canary-" + secrets.token_hex(8)
    canary.write_text(content)
    secret = "sk-kernel-only-" + secrets.token_hex(12)
    monkeypatch.setenv(SECRET_VAR, secret)            # set before the pool forks
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    yield canary, content, secret, listener
    listener.close()


def run(actions, canary, port, kernel_layer: bool):
    with WorkerPool(2, timeout_s=30, memory_mb=1024, kernel_layer=kernel_layer) as pool:
        results = evaluate_many([program(a, canary, port) for a in actions], ROUTING, [TINY],
                                pool=pool)
    return dict(zip(actions, results))


def test_with_curation_off_the_kernel_layer_alone_contains_every_attack(stage):
    canary, content, secret, listener = stage
    before = live_descendants()
    results = run(list(ATTACKS), canary, listener.getsockname()[1], kernel_layer=True)
    for action, result in results.items():
        assert result.status != "ok" and result.error, (action, result)
        assert secret not in result.error and content not in result.error, (action, result.error)
    # every error is the kernel's refusal, not some other failure of the attack
    for action in ("delete", "truncate", "rename", "fork", "kill_parent", "exec", "socket"):
        assert "Operation not permitted" in results[action].error, results[action].error
    assert "Permission denied" in results["proc_secret"].error        # Landlock: no /proc
    assert "Permission denied" in results["read_file"].error          # nor the run's files
    assert "LEAK[None]" in results["env_secret"].error                # an empty environment
    assert canary.read_text() == content and not canary.with_suffix(".txt.moved").exists()
    with pytest.raises(BlockingIOError):
        listener.accept()
    assert not (live_descendants() - before)


def test_the_same_escapes_without_the_kernel_layer_really_succeed(stage):
    """Proof the attacks above are real: with the kernel layer off they delete, read, leak."""
    canary, content, secret, listener = stage
    results = run(["read_file", "env_secret"], canary, listener.getsockname()[1],
                  kernel_layer=False)
    assert content in results["read_file"].error
    # the engine still redacts nothing it does not know is secret, but the pool scrubs the
    # environment in any case: the value never reaches the job
    assert secret not in results["env_secret"].error
    run(["delete"], canary, listener.getsockname()[1], kernel_layer=False)
    assert not canary.exists()
