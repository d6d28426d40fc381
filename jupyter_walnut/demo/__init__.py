"""The local demo: a provider, the local ledger with a funded wallet, and JupyterLab with a
sample notebook that trains a small model on a Walnut kernel (`bash .ci/demo`)."""
