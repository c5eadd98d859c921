"""Inference-time steering of diffusion models in NumPyro: twisted SMC over a model's denoising chain,
compiled as one ``jax.jit`` per sampling pass."""
from .chains import (DenoisingKernel, DiffusersKernel, GaussianMixture, GaussianMixtureKernel, LinearGaussianKernel,
                     diffusion_chain, markov_chain)
from .infer import (PMMH, TDS, TRITSMC, BestOfN, Evidence, FKSteering, ImportanceSampling, SMCResult, TwistedSMC,
                    estimate_evidence, evidence_from_passes, log_bayes_factor, recycle)
from .twists import LinearTwist, LookaheadTwist, NeuralTwist

__version__ = "0.1.0"
__all__ = ["TDS", "BestOfN", "DenoisingKernel", "DiffusersKernel", "Evidence", "FKSteering", "GaussianMixture",
           "GaussianMixtureKernel", "ImportanceSampling", "LinearGaussianKernel", "LinearTwist", "LookaheadTwist",
           "NeuralTwist", "PMMH", "SMCResult", "TRITSMC", "TwistedSMC", "diffusion_chain", "estimate_evidence",
           "evidence_from_passes",
           "log_bayes_factor", "markov_chain", "recycle"]
