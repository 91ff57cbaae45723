"""Training: a point-in-time training set, candidates in MLflow, the evaluation gate, registration.

``training_set`` -> ``train`` (one candidate) -> ``gate`` (judge the best against floors and the
champion, using ``metrics`` and ``bootstrap``) -> ``register`` (challenger alias, ``model_card``).
"""
