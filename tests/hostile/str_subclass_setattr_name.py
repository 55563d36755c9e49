# expect: error: TypeError: attribute name must be str
class Name(str):
    def startswith(self, prefix, *args):
        return False


class Box:
    pass


def route(queue, replicas, now, knobs):
    setattr(Box(), Name("__class__"), Box)
    return []
