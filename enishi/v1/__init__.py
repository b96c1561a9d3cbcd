"""Generated code for the enishi v1 gRPC/protobuf contracts. Never edit by hand.

Produced from `protos/enishi/v1/*.proto` by `make protos` (`python -m scripts.gen_protos`);
change the protos and regenerate. `tests/unit/test_protos.py` fails when this package is stale.
"""
