"""The demo: the handbook's simulator (``simulate``) and the whole closed loop (``closed_loop``)."""
