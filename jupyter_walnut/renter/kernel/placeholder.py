"""Stands in a Walnut kernelspec's argv; the `walnut` provisioner never runs it."""

import sys

sys.exit("this kernel runs on a Walnut provider; start it from a Jupyter Server with "
         "jupyter-walnut installed")
