"""The renter's side: offers, sessions on providers, their kernelspecs. No Jupyter Server
imports here; `jupyter_walnut.renter.extension` is the thin layer on top."""
