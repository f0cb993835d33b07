"""CM3Leon 7B (paper Table 3): 32 layers, d_model 4096.

    cm3jax model size --config experiments/cm3leon_7b.py --mesh 1,256,1

Paper-silent choices: 32 heads of 128, GELU MLP of 4 d_model, tied embeddings, the
paper's 56,320-entry vocabulary.
"""

from cm3jax.config import decoder_experiment

TOKENS = 2_400_000_000_000  # Table 3
STEPS = TOKENS // (2048 * 4096)  # batches of 2048 x 4096 = 8.4M tokens (the paper's "8M")


def get_config(variant: str = ""):
    del variant
    return decoder_experiment(
        model=dict(vocab_size=56_320, d_model=4096, n_layers=32, n_heads=32, mlp_hidden=16_384,
                   tie_embeddings=True, max_seq_len=4096, scan_layers=True),
        train=dict(batch_size=2048, seq_len=4096, steps=STEPS, warmup_steps=1500,
                   peak_lr=1.2e-4),
        paper_params=7e9,
    )
