"""Features: the handbook's 15 model inputs (``compute``) and Feast as fraudflow uses it (``store``)."""
