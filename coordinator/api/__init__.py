"""The HTTP edge: the REST API (``/v1``), ``/metrics``, ``/healthz``, the OpenAPI document and
the dashboard (``static/``), as thin aiohttp handlers over an ``ApiContext`` (``context``)
that the service builds; ``app`` assembles them and starts the server.

May import: every layer up to ``driver`` (the handlers decode, call ``store``, ``models``,
``tasks`` or ``devices``, and answer); never the roof (``service``, ``config``) nor its siblings
``rounds``, ``broker`` and ``telemetry``. Its settings (``settings.HttpConfig``) and HTTPS
set-up (``tls``) live here; ``config`` composes them.
"""
