from .evidence import Evidence, estimate_evidence, log_bayes_factor
from .pmmh import PMMH
from .recycling import recycle
from .result import SMCResult
from .steering import TDS, BestOfN, FKSteering, ImportanceSampling
from .tri_tsmc import TRITSMC, IterationStats
from .twisted_smc import TwistedSMC

__all__ = ["PMMH", "BestOfN", "Evidence", "FKSteering", "ImportanceSampling", "IterationStats", "SMCResult", "TDS",
           "TRITSMC", "TwistedSMC", "estimate_evidence", "log_bayes_factor", "recycle"]
