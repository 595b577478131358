"""Encoders: scaled features -> latent state vectors z_t (plan phase 3)."""
