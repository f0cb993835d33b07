"""cm3jax: CM3Leon in JAX/Flax."""

__version__ = "0.1.0"
