"""The message path's decisions and their workers: dispatch (intake and execution), router,
commands, pairing, the outbox, the scheduler.
"""
