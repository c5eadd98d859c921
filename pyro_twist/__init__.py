"""Inference-time steering of diffusion models in Pyro: twisted SMC over a model's denoising chain."""
from .chains import (DenoisingKernel, DiffusersKernel, GaussianMixture, GaussianMixtureKernel, LinearGaussianKernel,
                     diffusion_chain, markov_chain)
from .infer import (PMMH, TDS, TRITSMC, BestOfN, Evidence, FKSteering, ImportanceSampling, SMCResult, TwistedSMC,
                    estimate_evidence, log_bayes_factor, recycle)
from .twists import GaussianClassTwist, LinearTwist, LookaheadTwist, NeuralTwist

__version__ = "0.1.0"
__all__ = ["PMMH", "TDS", "TRITSMC", "BestOfN", "DenoisingKernel", "DiffusersKernel", "Evidence", "FKSteering",
           "GaussianClassTwist", "GaussianMixture", "GaussianMixtureKernel", "ImportanceSampling",
           "LinearGaussianKernel", "LinearTwist", "LookaheadTwist", "NeuralTwist", "SMCResult", "TwistedSMC",
           "diffusion_chain", "estimate_evidence", "log_bayes_factor", "markov_chain", "recycle"]
