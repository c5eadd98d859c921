from .resampling import RESAMPLERS, get_resampler, multinomial, residual, stratified, systematic
from .trust_region import TrustRegionStep, chi_square_to_target, dual_objective, escort_kl, trust_region_step
from .weights import ess, log_evidence_se, log_mean_exp, normalized_weights

__all__ = ["RESAMPLERS", "TrustRegionStep", "chi_square_to_target", "dual_objective", "ess", "escort_kl",
           "get_resampler", "log_evidence_se", "log_mean_exp", "multinomial", "normalized_weights", "residual",
           "stratified", "systematic", "trust_region_step"]
