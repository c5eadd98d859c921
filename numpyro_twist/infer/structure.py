"""What inference reads from a model's sites: per-particle log-densities, and the errors for models it cannot run."""
import jax.numpy as jnp


def per_particle_site_error(site, chain):
    return ValueError(
        f"sample site {site!r} is random per particle but stands before the chain {chain!r}, "
        "outside its state: resampling could not keep it consistent with the particles. "
        "Make it part of the chain's state, pass it as an argument to the model, or fix it "
        "with numpyro.handlers.condition."
    )


def no_chain_error():
    return ValueError(
        "the model has no chain: inference found no numpyro_twist.markov_chain or diffusion_chain in it. "
        "Write the chain with one of them (a hand-written loop of sample sites cannot be compiled into "
        "the one scan over the chain that inference runs)."
    )


def second_chain_error(name, first):
    return ValueError(
        f"the model runs a second chain {name!r} after the chain {first!r}: inference steers one chain "
        "per model. Write them as one chain whose state holds both."
    )


def site_log_prob(msg, num_particles):
    """The log-density an observed or factor site adds to each particle's weight, shape ``(N,)``."""
    log_prob = msg["fn"].log_prob(msg["value"])
    if msg.get("mask") is not None:
        log_prob = jnp.where(msg["mask"], log_prob, 0.0)
    if msg.get("scale") is not None:
        log_prob = msg["scale"] * log_prob
    if log_prob.ndim > 1 or (log_prob.ndim == 1 and log_prob.shape[0] not in (1, num_particles)):
        raise ValueError(
            f"site {msg['name']!r} has log-density of shape {log_prob.shape}, but one value "
            f"per particle ({num_particles},) is needed: declare the data dimensions as event "
            "dimensions with .to_event(...)"
        )
    return jnp.broadcast_to(log_prob, (num_particles,))
