"""The platform's Grafana dashboards as code (Grafana Foundation SDK).

``panels`` holds the shared query, panel, variable and dashboard helpers; ``serving``, ``drift`` and ``quality``
define one dashboard each; ``build`` writes their JSON next to this file (``python monitoring/dashboards/build.py``).
"""
