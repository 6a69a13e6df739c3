"""The credit-risk demo: train, export to ONNX, publish, ingest, and predict over gRPC.

Training packages (scikit-learn, skl2onnx) are imported only here: they are the `train`
extra, never a dependency of the server.
"""
