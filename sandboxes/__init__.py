"""Sandboxes that run agent commands off the host (Docker, bubblewrap): see shared/DESIGN.md, Sandbox.

Not built yet; the sandbox issue fills this package.
"""
