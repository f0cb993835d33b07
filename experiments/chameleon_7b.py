"""Chameleon 7B as released (Hugging Face `facebook/chameleon-7b` config): the weight-import target.

    cm3jax model size --config experiments/chameleon_7b.py --mesh 1,8,1
"""

from cm3jax.config import decoder_experiment


def get_config(variant: str = ""):
    del variant
    return decoder_experiment(
        model=dict(vocab_size=65_536, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, mlp_hidden=11_008,
                   norm="rmsnorm", mlp="swiglu", positions="rope", rope_theta=10_000.0, qk_norm=True,
                   max_seq_len=4096, scan_layers=True),
        train=dict(seq_len=4096, z_loss=1e-5),
        paper_params=7e9,
    )
