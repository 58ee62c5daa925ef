"""Polyhistor: parameter-efficient multi-task adaptation for dense vision tasks (Liu et al., NeurIPS 2022).

PASCAL-Context multi-task dense prediction on a frozen Swin with hypernetwork-made adapters; see README.md.
"""
