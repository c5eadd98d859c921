"""Denoising kernels: diffusers' step() reproduced, the exact Gaussian-mixture denoiser, steering toward a mode."""
import pyro
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from pyro_twist import (TDS, DiffusersKernel, FKSteering, GaussianMixture, GaussianMixtureKernel, TwistedSMC,
                        diffusion_chain)
from pyro_twist.chains.row_cache import match_rows


SCHEDULERS = {
    "ddpm": lambda: DDPMScheduler(num_train_timesteps=1000),
    "ddpm_v_noclip": lambda: DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction",
                                           clip_sample=False),
    "ddpm_large_variance": lambda: DDPMScheduler(num_train_timesteps=1000, variance_type="fixed_large"),
    "ddim_eta1": lambda: DDIMScheduler(num_train_timesteps=1000),
    "ddim_eta0.3_sample": lambda: DDIMScheduler(num_train_timesteps=1000, prediction_type="sample"),
}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_transition_reproduces_scheduler_step(unet, name):
    scheduler = SCHEDULERS[name]()
    eta = 0.3 if "eta0.3" in name else 1.0
    kernel = DiffusersKernel(unet, scheduler, num_steps=10, eta=eta)
    x = torch.randn(3, 1, 8, 8)
    for k in range(kernel.num_steps, 0, -1):
        t = kernel.timestep(k)
        noise = torch.randn_like(x)
        with torch.no_grad():
            transition = kernel.transition(k, x)
            output = unet(x, t).sample
            if kernel.kind == "ddim":
                step = kernel.scheduler.step(output, t, x, eta=eta, variance_noise=noise)
            else:  # DDPMScheduler.step draws its noise from the generator it is given
                seed = 1000 + k
                step = kernel.scheduler.step(output, t, x, generator=torch.Generator().manual_seed(seed))
                noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
        std = transition.stddev if isinstance(transition, pyro.distributions.Independent) else 0.0
        assert torch.allclose(transition.mean + std * noise, step.prev_sample, atol=1e-5), (name, k)
        assert torch.allclose(kernel.predict_x0(k, x).detach(), step.pred_original_sample, atol=1e-5)
        x = step.prev_sample
    # The last DDPM step adds no noise: it is a deterministic (Delta) step.
    assert isinstance(kernel.transition(1, x), pyro.distributions.Delta)


def test_ddim_without_noise_is_refused(unet):
    with pytest.raises(ValueError, match="eta = 0 is a deterministic sampler.*eta > 0"):
        DiffusersKernel(unet, DDIMScheduler(num_train_timesteps=1000), num_steps=10, eta=0.0)


def test_denoiser_counts_and_image_chain_under_smc(unet):
    kernel = DiffusersKernel(unet, DDPMScheduler(num_train_timesteps=1000), num_steps=5)

    def model():
        x0 = diffusion_chain("img", kernel, (1, 8, 8))
        pyro.factor("brightness", 4.0 * x0.mean((-1, -2, -3)))

    result = FKSteering(model, 6, progress_bar=False).run()
    samples = result.get_samples()
    assert samples["img_0"].shape == (6, 1, 8, 8)
    # The look-ahead at x_k and the transition from the resampled x_k share one denoiser
    # call per particle; at k = 0 the look-ahead is the state itself.
    assert kernel.num_evaluations == 6 * 5


@pytest.mark.parametrize("method", [FKSteering, TDS])
def test_shared_denoiser_calls_change_no_result(method):
    mixture = GaussianMixture.ring(num_components=4, radius=2.0, std=0.4)
    kernel = GaussianMixtureKernel(mixture, num_steps=20)

    def model():
        x0 = diffusion_chain("x", kernel, (2,))
        pyro.factor("reward", x0 @ torch.tensor([1.5, 0.5], dtype=torch.float64))

    results = []
    for share in (True, False):
        if not share:
            kernel._last_evaluation.get = lambda key, inputs: None
        kernel.num_evaluations = 0
        pyro.set_rng_seed(3)
        results.append((method(model, 64, progress_bar=False).run(), kernel.num_evaluations))
    (shared, shared_count), (separate, separate_count) = results
    assert shared.log_evidence.item() == separate.log_evidence.item()
    assert torch.equal(shared.trajectories()["x_0"], separate.trajectories()["x_0"])
    assert shared_count == 64 * 20 and separate_count == 64 * (20 + 20)


def test_match_rows_finds_copies_and_refuses_strangers():
    reference = torch.randn(6, 2, 3)
    ancestors = torch.tensor([5, 0, 0, 3, 3, 3])
    assert torch.equal(match_rows(reference[ancestors], reference), ancestors)
    stranger = reference[ancestors].clone()
    stranger[2, 1, 1] += 1e-7
    assert match_rows(stranger, reference) is None


def test_exact_denoiser_is_the_posterior_mean():
    mixture = GaussianMixture.ring(num_components=3, radius=2.0, std=0.5)
    alpha_prod = torch.tensor(0.4, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x0 = mixture.sample(400_000, generator=g)
    xt = alpha_prod.sqrt() * x0 + (1 - alpha_prod).sqrt() * torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    # E[x0 | xt] is the best predictor: regressing x0 on it gives slope 1 and no residual correlation.
    predicted = mixture.posterior_mean(xt, alpha_prod)
    residual = x0 - predicted
    assert residual.mean(0).abs().max() < 0.01
    assert (residual * predicted).mean(0).abs().max() < 0.01
    assert (residual * xt).mean(0).abs().max() < 0.01


def test_tilted_mixture_matches_importance_weights():
    mixture = GaussianMixture.ring()
    a = torch.tensor([0.7, -0.4], dtype=torch.float64)
    x = mixture.sample(400_000, generator=torch.Generator().manual_seed(1))
    w = torch.softmax(x @ a, 0)
    tilted = mixture.tilted(a)
    assert torch.allclose(mixture.mode_weights(x, w), tilted.weights, atol=0.01)
    assert torch.allclose(w @ x, tilted.weights @ tilted.means, atol=0.02)
    log_z_hat = torch.logsumexp(x @ a, 0) - torch.log(torch.tensor(float(x.shape[0])))
    assert abs(log_z_hat.item() - mixture.log_normalizer(a).item()) < 0.01


def total_variation(p, q):
    return 0.5 * (p - q).abs().sum().item()


def test_steering_brings_mode_weights_to_the_tilted_mixture():
    mixture = GaussianMixture.ring()
    kernel = GaussianMixtureKernel(mixture, num_steps=100)
    a = torch.tensor([1.0, 0.3], dtype=torch.float64)
    target = mixture.tilted(a).weights

    def model():
        x0 = diffusion_chain("x", kernel, (2,))
        pyro.factor("reward", x0 @ a)

    n = 256
    base = TwistedSMC(model, n, progress_bar=False).run()  # unweighted ancestral samples are base sampling
    tv_base = total_variation(mixture.mode_weights(base.trajectories()["x_0"]), target)
    for method in (FKSteering(model, n, progress_bar=False), TDS(model, n, progress_bar=False)):
        tvs = [total_variation(mixture.mode_weights(method.run().get_samples()["x_0"]), target) for _ in range(3)]
        mean_tv = sum(tvs) / len(tvs)
        assert mean_tv < 0.5 * tv_base, (type(method).__name__, tvs, tv_base)
        assert mean_tv < 0.15, (type(method).__name__, tvs)


def test_a_twists_own_proposal_is_not_asked_for_deterministic_steps():
    mixture = GaussianMixture.ring()
    kernel = GaussianMixtureKernel(mixture, num_steps=10)
    a = torch.tensor([1.0, 0.3], dtype=torch.float64)

    def model():
        x0 = diffusion_chain("x", kernel, (2,))
        pyro.factor("reward", x0 @ a)

    class ShiftingTwist:
        """Proposes the base mean shifted by variance * a: the linear twist, by hand."""

        def __init__(self):
            self.asked = []

        def log_psi(self, k, x):
            return x @ a

        def propose(self, k, base):
            self.asked.append(k)
            return pyro.distributions.Normal(base.mean + base.variance * a, base.stddev).to_event(1)

    twist = ShiftingTwist()
    pyro.set_rng_seed(0)
    own = TwistedSMC(model, 64, twist=twist, progress_bar=False).run()
    assert twist.asked == list(range(10, 0, -1))  # the last step (k = 0) is a Delta: nothing to propose
    pyro.set_rng_seed(0)
    linear = TwistedSMC(model, 64, twist=type("Linear", (), {"log_psi": lambda self, k, x: x @ a})(),
                        progress_bar=False).run()
    assert torch.allclose(own.log_evidence, linear.log_evidence)
