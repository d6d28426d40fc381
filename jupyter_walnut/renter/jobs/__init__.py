"""Walnut from code: remote kernels for the magics, and batch jobs that run unattended.

Kept import-cheap: `%load_ext jupyter_walnut` imports this package.
"""
