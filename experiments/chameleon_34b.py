"""Chameleon 34B as released: grouped-query attention and the swin norm order.

    cm3jax model size --config experiments/chameleon_34b.py --mesh 1,64,4
"""

from cm3jax.config import decoder_experiment


def get_config(variant: str = ""):
    del variant
    return decoder_experiment(
        model=dict(vocab_size=65_536, d_model=8192, n_layers=48, n_heads=64, n_kv_heads=8, mlp_hidden=22_016,
                   norm="rmsnorm", mlp="swiglu", positions="rope", rope_theta=10_000.0, qk_norm=True,
                   swin_norm=True, max_seq_len=4096, scan_layers=True),
        train=dict(seq_len=4096, z_loss=1e-5),
        paper_params=34e9,
    )
