# expect: error: name 'open' is not defined
def route(queue, replicas, now, knobs):
    with open("@CANARY@", "w") as fh:
        fh.write("pwned")
    return [(q.id, 0) for q in queue]
