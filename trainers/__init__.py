"""Trainers: advantages, losses, the training loop and weight sync.

Not built yet; the trainer issue fills this package.
"""
