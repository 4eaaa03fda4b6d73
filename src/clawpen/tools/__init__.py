"""The host side of the tools an agent calls through its socket: send_message, jobs, web_fetch."""
