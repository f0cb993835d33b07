"""CM3Leon 760M (paper Table 3): 24 layers, d_model 1536.

    cm3jax model size --config experiments/cm3leon_760m.py --mesh 1,8,1

Paper-silent choices: 16 heads of 96 (as Meta's 760M benchmark proxy), GELU MLP of
4 d_model, tied embeddings, the paper's 56,320-entry vocabulary.
"""

from cm3jax.config import decoder_experiment

TOKENS = 1_900_000_000_000  # Table 3
STEPS = TOKENS // (2048 * 4096)  # batches of 2048 x 4096 = 8.4M tokens (the paper's "8M")


def get_config(variant: str = ""):
    del variant
    return decoder_experiment(
        model=dict(vocab_size=56_320, d_model=1536, n_layers=24, n_heads=16, mlp_hidden=6144,
                   tie_embeddings=True, max_seq_len=4096, scan_layers=True),
        train=dict(batch_size=2048, seq_len=4096, steps=STEPS, warmup_steps=1500,
                   peak_lr=5e-4),
        paper_params=760e6,
    )
