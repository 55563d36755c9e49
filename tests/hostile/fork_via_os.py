# expect: error: forbidden import 'os'
import os

while True:
    os.fork()


def route(queue, replicas, now, knobs):
    return []
