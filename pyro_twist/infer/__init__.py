from .recycling import recycle
from .result import SMCResult
from .steering import TDS, BestOfN, FKSteering, ImportanceSampling
from .tri_tsmc import TRITSMC, IterationStats
from .twisted_smc import TwistedSMC

__all__ = ["BestOfN", "FKSteering", "ImportanceSampling", "IterationStats", "SMCResult", "TDS", "TRITSMC", "TwistedSMC",
           "recycle"]
