"""Entry points into other people's code and exporters of a run's evidence to other systems.

The ``audit`` factory protocol, framework callbacks (Lightning, Hugging Face ``transformers``) and exporters
(MLflow, OpenTelemetry, RDF). Each optional library is imported only inside its own module, on use.
"""
