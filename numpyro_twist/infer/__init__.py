from .evidence import Evidence, estimate_evidence, log_bayes_factor
from .result import SMCResult
from .steering import TDS, BestOfN, FKSteering, ImportanceSampling
from .steps import SMCState, SMCSteps, StepInfo
from .twisted_smc import SMCOutput, TwistedSMC

__all__ = ["BestOfN", "Evidence", "FKSteering", "ImportanceSampling", "SMCOutput", "SMCResult", "SMCState",
           "SMCSteps", "StepInfo", "TDS", "TwistedSMC", "estimate_evidence", "log_bayes_factor"]
