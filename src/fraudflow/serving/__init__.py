"""Serving: the scoring core behind the BentoML service, importable without BentoML.

``scoring`` (request model, feature lookup, model), ``routing`` (champion/challenger inside one
process), ``state`` (the deployment state file every scoring process follows),
``prediction_log`` (every answered request, for monitoring and audit).
"""
