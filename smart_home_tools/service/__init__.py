"""The prediction service: ``smart-home serve`` (FastAPI on uvicorn).

- ``POST /predict``: a device (``device_id`` and ``hub_id``), answered from its latest row of ``usage_features``,
  or a full feature row (``device_type`` by name); the answer is next-day energy in Wh with its 80 % interval,
  the model that made it and the request id.
- ``POST /predict/batch``: up to 1,000 such rows, answered by one model version.
- ``GET /health``: the model version and its age, the features' latest day, whether the store is writable.
- ``/docs``: the OpenAPI schema.

Every answer is appended to the service's own store (``resources.online_store``) before the response is sent;
the ``online_predictions`` asset brings each day of it into the warehouse. The champion alias is polled, and a
new version is loaded and swapped in atomically (:mod:`smart_home_tools.service.state`).
"""
