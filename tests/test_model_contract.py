"""Without inference a chain is an ordinary Pyro model."""
import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import Predictive

from .conftest import REWARD, lg_model_a, lg_model_b


def test_site_names_and_steps(lg_kernel):
    trace = poutine.trace(lg_model_a(lg_kernel, REWARD)).get_trace()
    K = lg_kernel.num_steps
    chain = [name for name, site in trace.nodes.items() if site["type"] == "sample" and not site["is_observed"]]
    assert chain == [f"x_{k}" for k in range(K, -1, -1)]
    assert [trace.nodes[f"x_{k}"]["infer"]["step"] for k in range(K, -1, -1)] == list(range(K, -1, -1))
    assert trace.nodes["reward"]["is_observed"]


def test_predictive_samples_the_chain_marginal(lg_kernel):
    for form in (lg_model_a, lg_model_b):
        x0 = Predictive(form(lg_kernel, REWARD), num_samples=20000, parallel=True)()["x_0"]
        mean, cov = lg_kernel.marginal()
        se = (cov.diagonal() / x0.shape[0]).sqrt()
        assert torch.all((x0.mean(0) - mean).abs() < 4 * se)
        assert torch.allclose(torch.cov(x0.T), cov, atol=0.05 * cov.diagonal().max())


def test_condition_fixes_a_state(lg_kernel):
    fixed = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    model = pyro.condition(lg_model_a(lg_kernel, REWARD), data={"x_1": fixed})
    trace = poutine.trace(model).get_trace()
    assert torch.equal(trace.nodes["x_1"]["value"], fixed)
    assert torch.allclose(trace.nodes["x_0"]["fn"].mean, lg_kernel.transition(1, fixed).mean)
