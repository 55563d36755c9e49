# expect: error: AttributeError: "__class__" is an invalid attribute name
class Box:
    pass


class Other:
    pass


def route(queue, replicas, now, knobs):
    setattr(Box(), "__class__", Other)     # the policy's own object, but not a _ name
    return []
