# Generated Python for the gRPC API (proto/fairpool/v1/*.proto), with grpcio-tools.
# The proto files import each other from the repository root ("-I ."), so the generated
# modules import each other as `proto.fairpool.v1.*` and resolve from the checkout.
# PROTO_OUT lets the reproducibility test regenerate into a temporary folder.
PROTO_SRC := $(sort $(wildcard proto/fairpool/v1/*.proto))
PROTO_OUT ?= .

.PHONY: proto
## Regenerate proto/fairpool/v1/*_pb2*.py(i) and proto/prometheus/*_pb2.py(i) from the .proto files.
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I . \
	  --python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
	  $(PROTO_SRC)
	$(BIN)/python -m grpc_tools.protoc -I . \
	  --python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) proto/prometheus/remote_read.proto
