"""Jupyter Server glue: the `jupyter_walnut` ExtensionApp and its REST handlers."""
