"""Entry points into other people's code: the ``audit`` factory protocol and framework callbacks.

Each optional framework (Lightning, Hugging Face ``transformers``) is imported only inside its own module, on use.
"""
