"""What ``pyro_twist`` and ``numpyro_twist`` share: code that needs neither torch nor jax (numpy and
the standard library only), imported by both, so that each backend keeps to its own framework and
one piece of logic has one implementation.

* :mod:`twist_core.diagnostics`: the standard error of ``log Z_hat`` implied by an ESS, and what a
  Pareto k-hat says about the weights.
* :mod:`twist_core.pareto`: the Pareto k-hat of importance weights.
* :mod:`twist_core.learning`: TRI-TSMC's record of an iteration, its choice of the best measured
  twist and its diagnoses of learning (numbers in, messages out).
* :mod:`twist_core.arviz`: SMC results and PMMH runs as ArviZ ``DataTree``s.
"""
