"""Where agents run: real containers (``docker``) or threads in this process (``inprocess``)."""
