from .result import SMCResult
from .steering import TDS, BestOfN, FKSteering, ImportanceSampling
from .twisted_smc import TwistedSMC

__all__ = ["BestOfN", "FKSteering", "ImportanceSampling", "SMCResult", "TDS", "TwistedSMC"]
