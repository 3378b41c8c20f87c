"""Text-game envs: TextWorld (and later ALFWorld and LMRL-style games)."""
