from .denoising import DenoisingKernel
from .diffusers_kernel import DiffusersKernel
from .gaussian_mixture import GaussianMixture, GaussianMixtureKernel
from .linear_gaussian import LinearGaussianKernel, random_linear_gaussian
from .markov_chain import diffusion_chain, markov_chain

__all__ = ["DenoisingKernel", "DiffusersKernel", "GaussianMixture", "GaussianMixtureKernel", "LinearGaussianKernel",
           "diffusion_chain", "markov_chain", "random_linear_gaussian"]
