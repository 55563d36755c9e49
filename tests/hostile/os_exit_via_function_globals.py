# expect: error: "__globals__" is an invalid attribute name because it starts with "_"
import statistics


def route(queue, replicas, now, knobs):
    os = getattr(statistics.mean, "__globals__")["sys"].modules["os"]
    getattr(os, "_ex" + "it")(0)
