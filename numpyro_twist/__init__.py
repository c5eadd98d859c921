"""Inference-time steering of diffusion models in NumPyro: twisted SMC over a model's denoising chain,
compiled as one ``jax.jit`` per sampling pass."""
from .chains import (DenoisingKernel, DiffusersKernel, GaussianMixture, GaussianMixtureKernel, LinearGaussianKernel,
                     diffusion_chain, markov_chain)
from .infer import TDS, BestOfN, FKSteering, ImportanceSampling, SMCResult, TwistedSMC
from .twists import LinearTwist, LookaheadTwist

__version__ = "0.1.0"
__all__ = ["BestOfN", "DenoisingKernel", "DiffusersKernel", "FKSteering", "GaussianMixture", "GaussianMixtureKernel",
           "ImportanceSampling", "LinearGaussianKernel", "LinearTwist", "LookaheadTwist", "SMCResult", "TDS",
           "TwistedSMC", "diffusion_chain", "markov_chain"]
