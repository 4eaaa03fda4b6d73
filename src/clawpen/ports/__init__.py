"""What every listening port shares: connection caps and idle timeouts (``listener``), their
settings and the reserve of file descriptors kept for the door (``limits``), and JSON bodies
that refuse deep nesting with a 400 instead of a traceback (``safejson``)."""
