# expect: error: TypeError: type(name) must be str
class Name(str):
    def startswith(self, prefix, *args):
        return False          # "not a _ name"


def route(queue, replicas, now, knobs):
    return getattr(route, Name("__globals__"))
