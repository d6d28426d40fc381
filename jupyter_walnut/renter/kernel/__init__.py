"""Remote Walnut kernels as ordinary kernels of a Jupyter Server (a kernel provisioner)."""
