"""Operating clawpen: the admin socket, the dashboard, the disk guard, `clawpen doctor` (which
asks each platform's plugin for its probe).
"""
