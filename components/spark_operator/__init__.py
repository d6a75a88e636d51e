"""The feature step on the Kubeflow Spark Operator: a ``sparkoperator.k8s.io/v1beta2`` SparkApplication.

Not components themselves (``components/*.py`` each hold one ``@dsl.component``): the adapter the feature component
(``components.build_features``) calls with ``feature_engine=spark-operator``, kept here because components may
import only ``components`` and ``fraud_detection`` (import-linter's adapter layers).

* :mod:`.settings`: the job's cluster settings (image, namespace, resources, node pool), from the chart's ConfigMap;
* :mod:`.application`: the pure manifest builder;
* :mod:`.status`: the pure reading of an application's ``status`` (done, still running, failed);
* :mod:`.submit`: create the application with the ``kubernetes`` client and wait for it;
* :mod:`.driver`: the entry point the Spark driver runs (``mainApplicationFile``).
"""
