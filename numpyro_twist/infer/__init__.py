from twist_core.learning import twist_score

from .evidence import Evidence, estimate_evidence, evidence_from_passes, log_bayes_factor
from .pmmh import PMMH, PMMHState
from .recycling import recycle
from .result import SMCResult
from .steering import TDS, BestOfN, FKSteering, ImportanceSampling
from .steps import SMCState, SMCSteps, StepInfo, TransitionRecord
from .tri_tsmc import TRITSMC, IterationStats, learning_diagnosis, resampling_ess
from .twisted_smc import SMCOutput, TwistedSMC

__all__ = ["BestOfN", "Evidence", "FKSteering", "ImportanceSampling", "IterationStats", "PMMH", "PMMHState",
           "SMCOutput", "SMCResult", "SMCState", "SMCSteps", "StepInfo", "TDS", "TRITSMC", "TransitionRecord",
           "TwistedSMC", "estimate_evidence", "evidence_from_passes", "learning_diagnosis", "log_bayes_factor",
           "recycle", "resampling_ess", "twist_score"]
