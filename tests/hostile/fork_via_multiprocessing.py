# expect: error: forbidden import 'multiprocessing'
import multiprocessing


def route(queue, replicas, now, knobs):
    multiprocessing.Process(target=route).start()
    return []
