"""Valid models that once gave silently wrong results or obscure failures, each named after what broke."""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from diffusers import DDPMScheduler

from pyro_twist import (TDS, FKSteering, GaussianMixture, GaussianMixtureKernel, LinearTwist, TRITSMC, TwistedSMC,
                        DiffusersKernel, diffusion_chain, markov_chain)

from .conftest import REWARD, SEED, lg_model_a, lg_model_b


def test_chain_structure_follows_the_kernel_passed_as_argument():
    # One model, two kernels as run() arguments: the look-ahead must use the kernel being sampled.
    kernels = [GaussianMixtureKernel(GaussianMixture.ring(num_components=4, radius=r, std=0.3), num_steps=10)
               for r in (1.0, 2.0)]

    def model(kernel):
        x0 = diffusion_chain("x", kernel, (2,))
        pyro.factor("reward", x0 @ torch.tensor([1.0, 0.5], dtype=torch.float64))

    sampler = FKSteering(model, 32, progress_bar=False)
    sampler.run(kernels[0])
    first_count = kernels[0].num_evaluations
    sampler.run(kernels[1])
    assert kernels[0].num_evaluations == first_count
    assert kernels[1].num_evaluations == 32 * 10


def test_kernels_sharing_a_scheduler_do_not_corrupt_each_other(unet):
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    first = DiffusersKernel(unet, scheduler, num_steps=10)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        before = first.transition(5, x).mean
        DiffusersKernel(unet, scheduler, num_steps=37)
        first.clear_cache()
        after = first.transition(5, x).mean
    assert torch.equal(before, after)
    assert first.scheduler is not scheduler and scheduler.num_inference_steps is None  # the user's is untouched


def test_two_chains_with_the_same_name_are_refused(lg_kernel):
    def model():
        x0 = diffusion_chain("x", lg_kernel, (lg_kernel.dim,))
        y0 = diffusion_chain("x", lg_kernel, (lg_kernel.dim,))
        pyro.factor("reward", (x0 + y0) @ REWARD)

    with pytest.raises(ValueError, match="chain site 'x_20' comes after the chain 'x' has ended.*unique"):
        TwistedSMC(model, 8, progress_bar=False).run()


class _RowTwist:
    def log_psi(self, k, x):
        return (x @ REWARD).unsqueeze(0)  # shape (1, N): one row too many


def test_twist_returning_the_wrong_shape_is_refused(lg_kernel):
    with pytest.raises(ValueError, match=r"log_psi\(20, x\) returned shape \(1, 8\) for 8 particles"):
        TwistedSMC(lg_model_a(lg_kernel, REWARD), 8, twist=_RowTwist(), progress_bar=False).run()


@pytest.mark.parametrize("num_particles", [1, 16])
def test_newton_proposal_with_linear_twist_is_exact(lg_kernel, num_particles):
    twist = lg_kernel.optimal_twist(REWARD)
    assert isinstance(twist, LinearTwist)
    result = TwistedSMC(lg_model_b(lg_kernel, REWARD), num_particles, twist=twist, proposal="newton",
                        progress_bar=False).run()
    assert abs(result.log_evidence.item() - lg_kernel.log_normalizer(REWARD).item()) < 1e-6


def test_newton_final_run_after_learning_a_linear_twist(lg_kernel):
    tri = TRITSMC(lg_model_a(lg_kernel, REWARD), num_particles=64, num_iterations=2, final_proposal="newton",
                  progress_bar=False)
    result = tri.run()
    assert isinstance(tri.twist, LinearTwist)
    assert abs(result.log_evidence.item() - lg_kernel.log_normalizer(REWARD).item()) < 0.5


def test_resampling_steps_must_be_a_collection(lg_kernel):
    with pytest.raises(ValueError, match="resampling_steps must be a collection of steps k.*got 5"):
        TwistedSMC(lg_model_a(lg_kernel, REWARD), 8, resampling_steps=5)


def test_final_num_particles_zero_is_refused(lg_kernel):
    with pytest.raises(ValueError, match="final_num_particles must be a positive integer or None, got 0"):
        TRITSMC(lg_model_a(lg_kernel, REWARD), final_num_particles=0)


@pytest.mark.parametrize("resampler, message", [
    (lambda log_w, n: torch.full((n,), -1), r"ancestor indices in \[-1, -1\]: they must lie in \[0, 7\]"),
    (lambda log_w, n: torch.zeros(n - 1, dtype=torch.long), r"shape \(7,\): it must return \(8,\) integer"),
])
def test_custom_resampler_output_is_checked(lg_kernel, resampler, message):
    sampler = TwistedSMC(lg_model_a(lg_kernel, REWARD), 8, resampling=resampler, ess_threshold=1.0,
                         progress_bar=False)
    with pytest.raises(ValueError, match=message):
        sampler.run()


def test_transition_returning_a_tensor_is_named(lg_kernel):
    def model():
        x0 = markov_chain("x", lg_kernel.prior(), lambda k, x: 0.9 * x, 5)
        pyro.factor("reward", x0 @ REWARD)

    with pytest.raises(TypeError, match=r"transition\(5, x\) of chain 'x' is a Tensor, not a distribution"):
        TwistedSMC(model, 8, progress_bar=False).run()


def test_reward_reduced_over_the_particle_axis_warns(lg_kernel):
    def model():
        x0 = diffusion_chain("x", lg_kernel, (lg_kernel.dim,))
        pyro.factor("reward", (x0 @ REWARD).sum())  # the sum runs over particles too

    with pytest.warns(UserWarning, match=r"site\(s\) \['reward'\] give one value for all 8 particles"):
        TwistedSMC(model, 8, progress_bar=False).run()


def test_reward_with_one_value_per_particle_does_not_warn(lg_kernel, recwarn):
    TwistedSMC(lg_model_a(lg_kernel, REWARD), 8, progress_bar=False).run()
    assert not [w for w in recwarn if "one value for all" in str(w.message)]


def _sharp_digits_model():
    from pyro_twist.pretrained import digit_classifier, digits_kernel, load_digits

    kernel, classifier = digits_kernel(num_steps=50), digit_classifier()
    images, _ = load_digits("test")
    y = images[0].flatten()[:32] + 0.2 * torch.randn(32)

    def model(y):
        x0 = diffusion_chain("x", kernel, shape=(1, 8, 8))
        pyro.sample("y", pyro.distributions.Normal(x0.flatten(-3)[..., :32], 0.1).to_event(1), obs=y)
        pyro.factor("prefer", classifier.log_prob(x0, 3) / 0.1)

    return model, y


def test_tds_on_a_sharp_reward_stays_on_the_data():
    # Measured at seed 0, N = 32: unbounded guidance drives states to |x| = 42 (the data lie in [-1, 1],
    # the first state has |x| < 4) and log Z_hat to -82,584; bounded at 1.0 they stay below 3.7 (-625).
    model, y = _sharp_digits_model()
    peaks = {}
    for max_shift in (None, 1.0):
        pyro.set_rng_seed(0)
        result = TDS(model, 32, progress_bar=False, max_shift=max_shift).run(y)
        assert torch.isfinite(result.log_weights).any() and torch.isfinite(result.log_evidence)
        peaks[max_shift] = max(value.abs().max().item() for value in result.trajectories().values())
    assert peaks[1.0] < 5.0 < 20.0 < peaks[None]


class _ExplodingTwist:
    proposal = "gradient"

    def log_psi(self, k, x):
        return 1e200 * (x**2).sum(-1)


def test_diverging_proposal_names_the_step(lg_kernel):
    message = r"proposal at chain site 'x_\d+' \(step k=\d+\) diverged: it moved the base mean"
    with pytest.raises(ValueError, match=message):
        TwistedSMC(lg_model_a(lg_kernel, REWARD), 8, twist=_ExplodingTwist(), progress_bar=False).run()


def test_max_shift_must_be_positive(lg_kernel):
    with pytest.raises(ValueError, match="max_shift must be positive or None, got 0"):
        TwistedSMC(lg_model_a(lg_kernel, REWARD), 8, max_shift=0)


def test_fk_sum_potential_warns_that_its_weights_degenerate(lg_kernel):
    with pytest.warns(UserWarning, match=r"potential='sum'.*final weights degenerate.*Use 'diff' or 'max'"):
        FKSteering(lg_model_a(lg_kernel, REWARD), 8, potential="sum")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_chain_matches_its_closed_form(dtype):
    from pyro_twist.chains.linear_gaussian import LinearGaussianKernel, random_linear_gaussian

    kernel = random_linear_gaussian(3, 10, dtype=dtype)
    exact = LinearGaussianKernel(kernel.A.double(), kernel.b.double(), kernel.s.double())
    reward = REWARD.to(dtype)

    def model():
        x0 = diffusion_chain("x", kernel, (3,))
        pyro.factor("reward", x0 @ reward)

    log_z = exact.log_normalizer(reward.double()).item()
    # The optimal twist leaves only rounding: states in 8 or 11 bits of mantissa, weights in float64.
    optimal = TwistedSMC(model, 512, twist=kernel.optimal_twist(reward), progress_bar=False).run()
    assert optimal.trajectories()["x_0"].dtype == dtype
    assert abs(optimal.log_evidence.item() - log_z) < 0.01
    learned = TRITSMC(model, num_particles=512, num_iterations=3, progress_bar=False).run()
    assert abs(learned.log_evidence.item() - log_z) < 0.05


def test_scalar_state_chain_learns_its_twist():
    # States of event shape (): a plain Normal transition, no .to_event.
    def model():
        x0 = markov_chain("x", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0),
                          lambda k, x: dist.Normal(0.9 * x, 0.3), 10)
        pyro.factor("reward", 1.5 * x0)

    variance = 1.0
    for _ in range(10):
        variance = 0.81 * variance + 0.09
    result = TRITSMC(model, num_particles=256, num_iterations=3, progress_bar=False).run()
    assert abs(result.log_evidence.item() - 1.5**2 * variance / 2) < 0.01


def _two_state_model():
    transition = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64)

    def model():
        x0 = markov_chain("x", dist.Categorical(torch.tensor([0.5, 0.5], dtype=torch.float64)),
                          lambda k, x: dist.Categorical(transition[x]), 5)
        pyro.factor("reward", (x0 == 1).double())

    marginal = torch.tensor([0.5, 0.5], dtype=torch.float64) @ torch.linalg.matrix_power(transition, 5)
    return model, torch.log(marginal @ torch.tensor([1.0, math.e], dtype=torch.float64)).item()


def test_integer_state_chain_runs_and_tritsmc_says_why_it_cannot_learn():
    model, log_z = _two_state_model()
    result = TwistedSMC(model, 4096, progress_bar=False).run()
    assert result.trajectories()["x_0"].dtype == torch.int64
    assert abs(result.log_evidence.item() - log_z) < 0.02
    with pytest.raises(ValueError, match="learns its default twist from the chain's Gaussian transitions, and the "
                                         "chain 'x' has none \\(its states are torch.int64\\)"):
        TRITSMC(model, num_particles=16, num_iterations=1, progress_bar=False).run()


def test_twist_built_for_other_states_is_named(lg_kernel):
    twist = LinearTwist(lg_kernel.num_steps, (5,))
    with pytest.raises(ValueError, match=r"LinearTwist was built for states of shape \(5,\), but step 20 has "
                                         r"states of shape \(3,\)"):
        TwistedSMC(lg_model_a(lg_kernel, REWARD), 8, twist=twist, progress_bar=False).run()


def test_nan_reward_names_its_site_and_particles(lg_kernel):
    def model():
        x0 = diffusion_chain("x", lg_kernel, (lg_kernel.dim,))
        pyro.factor("reward", torch.log(x0[..., 0]))  # NaN where x0[0] < 0

    pyro.set_rng_seed(0)
    result = TwistedSMC(lg_model_a(lg_kernel, REWARD), 64, progress_bar=False).run()
    negative = int((result.trajectories()["x_0"][:, 0] < 0).sum())
    pyro.set_rng_seed(0)
    with pytest.raises(ValueError, match=f"pyro.factor site 'reward' is NaN for {negative} of 64 particles"):
        TwistedSMC(model, 64, progress_bar=False).run()


def test_run_beyond_the_free_memory_is_refused_with_the_numbers(lg_kernel):
    # 10**12 particles: refused from the one-particle estimate, before anything is allocated.
    with pytest.raises(MemoryError, match=r"1000000000000 particles of 24 bytes over 21 steps keep at least "
                                          r"6.26e\+05 GiB, and cpu has [\d.]+ GiB free"):
        TwistedSMC(lg_model_a(lg_kernel, REWARD), 10**12, progress_bar=False).run()


def test_lean_run_keeps_only_the_final_states(lg_kernel):
    from pyro_twist.infer.memory import kept_bytes

    runs = {}
    for keep_paths in (True, False):
        pyro.set_rng_seed(0)
        sampler = TwistedSMC(lg_model_a(lg_kernel, REWARD), 256, keep_paths=keep_paths, progress_bar=False)
        runs[keep_paths] = sampler.run()
    full, lean = runs[True], runs[False]
    assert lean.log_evidence.item() == full.log_evidence.item()
    assert torch.equal(lean.trajectories()["x_0"], full.trajectories()["x_0"])
    assert list(lean.trajectories()) == ["x_0"] and len(full.trajectories()) == lg_kernel.num_steps + 1
    kept = {k: sum(v.nbytes for v in r._chain_values) + sum(a.nbytes for a in r.ancestors if a is not None)
            for k, r in runs.items()}
    structure = sampler.chain_structure()
    assert kept[False] == 256 * structure.state_nbytes
    assert 21 * 256 * structure.state_nbytes <= kept[True] <= kept_bytes(structure, 256, True, False)


class _FlatAtStep:
    """The optimal twist, except constant in x at one step (no gradient there at all)."""

    def __init__(self, twist, flat_step):
        self.twist, self.flat_step = twist, flat_step

    def log_psi(self, k, x):
        if k == self.flat_step:
            return torch.zeros(x.shape[0], dtype=x.dtype)
        return self.twist.log_psi(k, x)


def test_newton_proposal_with_a_twist_constant_at_one_step(lg_kernel):
    twist = _FlatAtStep(lg_kernel.optimal_twist(REWARD), flat_step=7)
    pyro.set_rng_seed(0)
    result = TwistedSMC(lg_model_b(lg_kernel, REWARD), 4096, twist=twist, proposal="newton", progress_bar=False).run()
    assert abs(result.log_evidence.item() - lg_kernel.log_normalizer(REWARD).item()) < 0.05


@pytest.mark.parametrize("sampler", [FKSteering, TDS])
def test_lookahead_runs_a_model_wrapped_in_pyro_condition(lg_kernel, sampler):
    # The look-ahead re-runs the model inside the run; a pyro.condition around it (as PMMH builds) was
    # installed twice: "cannot install a Messenger instance twice".
    def model():
        scale = pyro.sample("scale", dist.LogNormal(torch.tensor(0.0, dtype=torch.float64), 1.0))
        x0 = diffusion_chain("x", lg_kernel, (lg_kernel.dim,))
        pyro.factor("reward", x0 @ (scale * REWARD))

    scale = torch.tensor(0.5, dtype=torch.float64)
    conditioned = pyro.condition(model, data={"scale": scale})
    pyro.set_rng_seed(SEED)
    result = sampler(conditioned, 1024, progress_bar=False).run()
    log_z = lg_kernel.log_normalizer(scale * REWARD).item() + dist.LogNormal(0.0, 1.0).log_prob(scale).item()
    assert abs(result.log_evidence.item() - log_z) < 0.05
