"""The kernel gateway that runs inside each Walnut session (container or process).

It is stock jupyter-kernel-gateway configured for Walnut: TCP_NODELAY on kernel websockets,
no IOPub rate limit (the renter's own server decides what to drop), a 256 MiB websocket
frame cap, the session's token, a kernel limit, and kernel listing allowed.
"""
