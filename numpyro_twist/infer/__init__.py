from .result import SMCResult
from .steering import TDS, BestOfN, FKSteering, ImportanceSampling
from .steps import SMCState, SMCSteps, StepInfo
from .twisted_smc import SMCOutput, TwistedSMC

__all__ = ["BestOfN", "FKSteering", "ImportanceSampling", "SMCOutput", "SMCResult", "SMCState", "SMCSteps",
           "StepInfo", "TDS", "TwistedSMC"]
