"""``BeamPythonOperator``: the Beam provider's Python pipeline operator, usable without GCP.

``apache-airflow-providers-apache-beam`` 6.x raises ``AirflowOptionalProviderFeatureException``
while *constructing* ``BeamRunPythonPipelineOperator`` when the Google provider is not
installed (``BeamDataflowMixin.__init__`` runs through the cooperative ``super()`` chain),
even for DirectRunner, Prism, Flink or Spark runners. Where the Google provider is there,
this module is the stock operator; elsewhere it is a subclass whose MRO puts a no-op
``__init__`` in front of that mixin and that skips the ``DataflowConfiguration`` cast
(``execute`` would otherwise hit a ``NameError``). Everything else (templating, the command, the hook)
is the provider's. DataflowRunner still needs the Google provider.
"""

from __future__ import annotations

from airflow.providers.apache.beam.operators.beam import (
    GOOGLE_PROVIDER,
    BeamDataflowMixin,
    BeamRunPythonPipelineOperator,
)

__all__ = ["BeamPythonOperator"]


class _NoDataflow(BeamDataflowMixin):
    def __init__(self) -> None:  # the mixin's own __init__ only refuses to run without GCP
        pass


class _BeamPythonOperatorWithoutGoogle(BeamRunPythonPipelineOperator, _NoDataflow):
    """``BeamRunPythonPipelineOperator`` for non-Dataflow runners, Google provider absent."""

    def _cast_dataflow_config(self) -> None:
        # The stock method builds a DataflowConfiguration, a class of the Google provider.
        if self.runner.lower() == "dataflowrunner":
            raise ValueError("DataflowRunner needs apache-airflow-providers-google installed")


BeamPythonOperator = (BeamRunPythonPipelineOperator if GOOGLE_PROVIDER
                      else _BeamPythonOperatorWithoutGoogle)
