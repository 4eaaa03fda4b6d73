"""The message path's decisions and their workers: intake (accept -> route -> commit), worker
(claim -> run -> finish) and the board they share, router, commands, pairing, the outbox,
the scheduler.
"""
