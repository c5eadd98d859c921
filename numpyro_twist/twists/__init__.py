from .linear import LinearTwist
from .lookahead import LookaheadTwist

__all__ = ["LinearTwist", "LookaheadTwist"]
