"""gRPC transport: servicers convert protobuf <-> domain types and call
featurestore.serving."""
