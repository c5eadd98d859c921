from .resampling import RESAMPLERS, get_resampler, multinomial, residual, stratified, systematic
from .weights import ess, log_evidence_se, log_mean_exp, normalized_weights

__all__ = ["RESAMPLERS", "ess", "get_resampler", "log_evidence_se", "log_mean_exp", "multinomial",
           "normalized_weights", "residual", "stratified", "systematic"]
