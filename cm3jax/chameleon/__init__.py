"""Chameleon and Anole checkpoints in Hugging Face format, in and out of cm3jax."""
