"""Deployment: from a registered challenger to production through shadow and canary.

``bento`` builds the deployable unit, ``service_process`` starts and stops ``bentoml serve``,
``controller`` drives the stages, ``checks`` judges each stage, ``decisions`` logs every verdict.
"""
