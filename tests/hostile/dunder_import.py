# expect: error: "__import__" is an invalid variable name because it starts with "_"
def route(queue, replicas, now, knobs):
    __import__("os").remove("@CANARY@")
    return []
