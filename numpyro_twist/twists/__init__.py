from .linear import LinearTwist
from .lookahead import LookaheadTwist
from .neural import NeuralTwist

__all__ = ["LinearTwist", "LookaheadTwist", "NeuralTwist"]
