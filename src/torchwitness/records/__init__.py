"""The record vocabulary: the documented kinds a user's own training code writes through ``Run``.

``run.log_params`` → ``params``, ``run.log_metrics`` → ``metrics``, ``run.log_dataset`` → ``dataset``,
``run.log_model`` → ``model``, ``run.log_eval`` → ``eval``. Their schemas live in :mod:`.kinds` (published by
``torchwitness schema``); :mod:`.describe` computes digests, row and feature counts from the objects users have.
Reports read these kinds, never names a particular script happens to use.
"""
