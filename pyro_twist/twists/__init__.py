from .linear import LinearTwist
from .lookahead import LookaheadTwist
from .gaussian_classes import GaussianClassTwist
from .neural import NeuralTwist

__all__ = ["GaussianClassTwist", "LinearTwist", "LookaheadTwist", "NeuralTwist"]
