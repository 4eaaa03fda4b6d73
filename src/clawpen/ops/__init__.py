"""Operating clawpen: the admin socket, the dashboard, the disk guard, `clawpen doctor` and its
probes.
"""
