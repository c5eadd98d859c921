"""The Gaussian class twist: exact value function on Gaussian-mixture data, and the fit of its per-step guidance."""
import math

import pyro
import pytest
import torch

from pyro_twist import TRITSMC, GaussianClassTwist, GaussianMixture, GaussianMixtureKernel, TwistedSMC, diffusion_chain

MIXTURE = GaussianMixture([1.0, 2.0, 1.0, 3.0], [[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]],
                          [0.4, 0.3, 0.5, 0.3])
TARGET = 2  # the component whose posterior probability is the reward; its weight is 1/7


@pytest.fixture(scope="module")
def problem():
    kernel = GaussianMixtureKernel(MIXTURE, num_steps=40)

    def model(target):
        x0 = diffusion_chain("x", kernel, (2,))
        log_joint = MIXTURE._log_joint(x0, 1.0, 0.0)[0]
        pyro.factor("reward", log_joint[..., target] - torch.logsumexp(log_joint, -1))

    def twist(floor=0.0, guidance=1.0):
        return GaussianClassTwist(kernel.signal_variance, kernel.num_steps, MIXTURE.means,
                                  torch.diag_embed(MIXTURE.variances), MIXTURE.weights.log(),
                                  target=lambda target: target, floor=floor, guidance=guidance)

    return model, twist


def test_on_mixture_data_it_is_the_value_function(problem):
    # E[p(c | x_0)] = pi_c: log Z = log(1/7) up to the 40-step chain's own error. With the twist, the value
    # function p(c | x_k) itself, 20 runs at N = 64 spread far less than bootstrap's.
    model, twist = problem
    exact = math.log(MIXTURE.weights[TARGET].item())
    runs = {name: torch.tensor([TwistedSMC(model, 64, twist=t, progress_bar=False).run(TARGET).log_evidence.item()
                                for _ in range(20)])
            for name, t in (("bootstrap", None), ("twist", twist()))}
    print({name: (r.mean().item(), r.std().item()) for name, r in runs.items()}, exact)
    assert abs(runs["twist"].mean().item() - exact) < 0.03
    assert runs["twist"].std() < 0.3 * runs["bootstrap"].std()


def test_the_fit_keeps_the_value_function_and_tri_tsmc_runs_from_it(problem):
    # Fitting the guidance on the value function's own paths has little to gain: they stay near 1, and the
    # learning runs' path ESS stays far above the base chain's (about 1/7 of the paths carry the weight).
    # At N = 256 the value function's own runs measure 0.45-0.76 (seeds 0-5); here 0.68, 0.74, 0.79, 0.48,
    # with the guidance within 0.07 of 1 (0.12-0.30 at seeds 1-5).
    model, twist = problem
    pyro.set_rng_seed(0)
    start = twist()
    tri = TRITSMC(model, twist=start, num_particles=256, num_iterations=4, progress_bar=False)
    tri.run(TARGET)
    path_ess = [stats.ess / stats.num_particles for stats in tri.history]
    print(path_ess, start.guidance)
    assert min(path_ess) > 0.4
    assert (start.guidance - 1).abs().max() < 0.35


def test_learning_from_the_base_chain_finds_the_guidance(problem):
    # Started at guidance 0, the first learning run is the base chain's (about 1/7 of its paths carry the
    # weight). The fit reweights those paths to the target over the proposal that drew them, so it finds the
    # value function's gradient proposal from them: every later run's path ESS is far above the base's
    # (measured 0.20, then 0.74, 0.77, 0.75).
    model, twist = problem
    pyro.set_rng_seed(0)
    start = twist(guidance=0.0)
    tri = TRITSMC(model, twist=start, num_particles=256, num_iterations=4, progress_bar=False)
    tri.run(TARGET)
    path_ess = [stats.ess / stats.num_particles for stats in tri.history]
    print(path_ess, start.guidance)
    assert path_ess[0] < 0.25
    assert min(path_ess[1:]) > 0.5
    assert (start.guidance[1:] > 0.25).all()  # measured 0.34 (k = 1) to 1.96 (k = 40)


def test_one_twist_learns_for_one_class(problem):
    model, twist = problem
    tri = TRITSMC(model, twist=twist(), num_particles=16, progress_bar=False)
    tri.step(TARGET)
    with pytest.raises(ValueError, match="one twist per class"):
        tri.step(0)


def test_bad_input_is_refused(problem):
    _, twist = problem
    with pytest.raises(ValueError, match="covariances of shape"):
        GaussianClassTwist(lambda k: 1.0, 3, torch.zeros(2, 3), torch.zeros(2, 2, 2), torch.zeros(2), target=0)
    with pytest.raises(ValueError, match="not one of its classes"):
        twist().bind(7)
    with pytest.raises(ValueError, match="call bind"):
        twist().log_psi(0, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="at least two classes"):
        GaussianClassTwist.from_labelled(lambda k: 1.0, 3, torch.zeros(4, 2), torch.zeros(4), target=0)


def digits_problem(guidance, floor=0.05):
    """The shipped digits DDPM (50 steps) with reward log p(c | x_0) from the shipped classifier, and the
    training split's class Gaussians (3 clusters per class) as the twist."""
    from benchmarks.digits_steering import digit_model
    from pyro_twist.pretrained import digit_class_twist, digit_classifier, digits_kernel

    torch.set_num_threads(1)
    kernel = digits_kernel(num_steps=50)
    return digit_model(kernel, digit_classifier()), digit_class_twist(kernel, guidance, floor)


def test_on_the_digits_model_it_steers_with_a_steady_evidence():
    # No learning, N = 32, 8 seeds per digit. Measured: judged target rate 1.000 / 0.996 for 0 / 7 (the
    # exact target's own: 0.99, 0.98), log Z_hat sd 0.07 / 0.22 (FK steering's: 1.5-2.0). The judge is a
    # support-vector classifier trained on the test split, another family than the shipped convnet.
    from benchmarks.digits_steering import judged, train_judge

    model, twist = digits_problem(guidance=1.0)
    judge, _ = train_judge()
    for digit in (0, 7):
        pyro.set_rng_seed(digit)
        runs = [TwistedSMC(model, 32, twist=twist, progress_bar=False).run(digit) for _ in range(8)]
        rate = torch.cat([(judged(judge, r.get_samples()["x_0"]) == digit).double() for r in runs]).mean().item()
        log_z = torch.tensor([r.log_evidence.item() for r in runs])
        print(digit, rate, log_z.mean().item(), log_z.std().item())
        assert rate >= 0.95
        assert log_z.std() < 0.4
        assert abs(log_z.mean().item() - math.log(0.1)) < 0.6  # about P(c) under the base model


def test_on_the_digits_model_learning_never_falls_below_the_base_chain():
    # Learning from the base chain (guidance 0, floor 0.002) on digit 7, N = 256: the first run is the base
    # chain's (path ESS/N about 0.08, about P(7)); every later one, candidates rejected by the guard
    # included, stays above it and one reaches 0.45. Measured: 0.081, then 0.467 0.519 0.438 0.367 0.340
    # 0.574 0.561; with the floor 0.05 the peak was 0.430. Fits on the current proposal's paths alone,
    # started at guidance 1, fell below the base in about 1 of 30 runs: a rare path whose class shows late
    # carried the weight.
    from pyro_twist.twists.gaussian_classes import LEARNING_FLOOR

    model, twist = digits_problem(guidance=0.0, floor=LEARNING_FLOOR)
    pyro.set_rng_seed(7)
    tri = TRITSMC(model, twist=twist, num_particles=256, num_iterations=8, progress_bar=False)
    tri.run(7)
    path_ess = [stats.ess / stats.num_particles for stats in tri.history]
    print(path_ess)
    assert path_ess[0] < 0.15
    assert min(path_ess[1:]) > path_ess[0]
    assert max(path_ess) >= 0.45
