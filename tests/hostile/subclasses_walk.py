# expect: error: is an invalid attribute name because it starts with "_"
def route(queue, replicas, now, knobs):
    for cls in ().__class__.__bases__[0].__subclasses__():
        if cls.__name__ == "catch_warnings":
            cls()._module.__builtins__["__import__"]("os").remove("@CANARY@")
    return []
