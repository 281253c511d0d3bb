"""Sparkplug B output: payloads (pure, ``payloads``) and the sink (``sink``); the protobuf module is
generated from ``sparkplug_b.proto`` by protoc (grpcio-tools), see that file."""
