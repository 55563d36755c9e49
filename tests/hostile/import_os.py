# expect: error: forbidden import 'os'
import os


def route(queue, replicas, now, knobs):
    os.remove("@CANARY@")
    return [(q.id, 0) for q in queue]
