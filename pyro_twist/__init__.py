"""Inference-time steering of diffusion models in Pyro: twisted SMC over a model's denoising chain."""
from .chains import (DenoisingKernel, DiffusersKernel, GaussianMixture, GaussianMixtureKernel, LinearGaussianKernel,
                     diffusion_chain, markov_chain)
from .infer import TDS, TRITSMC, BestOfN, FKSteering, ImportanceSampling, SMCResult, TwistedSMC, recycle
from .twists import LinearTwist, LookaheadTwist, NeuralTwist

__version__ = "0.1.0"
__all__ = ["BestOfN", "DenoisingKernel", "DiffusersKernel", "FKSteering", "GaussianMixture", "GaussianMixtureKernel",
           "ImportanceSampling", "LinearGaussianKernel", "LinearTwist", "LookaheadTwist", "NeuralTwist", "SMCResult",
           "TDS", "TRITSMC", "TwistedSMC", "diffusion_chain", "markov_chain", "recycle"]
