# expect: error: "gi_frame" is a restricted
import heapq


def route(queue, replicas, now, knobs):
    merged = heapq.merge([1], [2])
    next(merged)
    frame = getattr(merged, "gi_" + "frame")      # a generator of trusted code
    frame.clear()
    return []
