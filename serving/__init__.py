"""SavedModel export in TF Serving's layout, the embedded TF-Serving-compatible server, and its client.

Export: `serving.serving_module.ServingModule` + `serving.export.export_saved_model`.
Serve: `serving.server.ModelServer` (REST and gRPC, as TensorFlow Serving speaks them).
Call: `serving.client.ServingClient` (same code for the embedded server and real TF Serving).
Submodules are imported on demand: importing `serving` alone loads no TensorFlow.
"""
