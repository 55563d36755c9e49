# expect: error: name 'SystemExit' is not defined
def route(queue, replicas, now, knobs):
    raise SystemExit(0)
