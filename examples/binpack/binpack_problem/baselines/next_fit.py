"""Next fit: only the most recently opened bin is considered."""


def pack(item, bins, knobs):
    if bins and bins[-1] >= item:
        return len(bins) - 1
    return -1
