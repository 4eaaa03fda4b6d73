"""What every listening socket shares, the public ports and the agents' doors alike: connection
caps, idle timeouts and checked heads (``listener``, ``heads``), their settings and the reserve
of file descriptors kept for the door (``limits``), and JSON bodies that refuse deep nesting
with a 400 instead of a traceback (``safejson``)."""
