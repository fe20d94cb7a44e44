# The local Kubernetes control plane for integration tests, demos and benchmarks:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok and helm
# (which lints and renders the chart), and the workload controllers the end-to-end tests
# run beside it (JobSet, the Kubeflow training operator, Kueue), built from the pinned Go
# wrapper modules in tests/controlplane/go, into $(CACHE) (Go module and build caches
# included).
# The build commands live in tests/controlplane/build.py, shared with `python -m
# tests.controlplane up`; a binary whose go.mod/go.sum/flags are unchanged is not rebuilt.
CONTROLPLANE := FAIRPOOL_CACHE=$(CACHE) $(BIN)/python -m tests.controlplane

INVENTORY ?= policies/defaults/cluster.yaml

.PHONY: controlplane cluster-up cluster-down cluster-status cluster-nodes

## Build the control-plane binaries that are missing (a cold build takes a while), and
## fetch the Go modules the workload CRDs (JobSet, PyTorchJob) are read from.
controlplane: $(STAMP)
	$(CONTROLPLANE) build
	$(CONTROLPLANE) crds

## Start etcd, kube-apiserver, kube-controller-manager and kwok on loopback; kubeconfigs in $(CACHE)/controlplane/cluster/kubeconfig.
cluster-up: controlplane
	$(CONTROLPLANE) up

## Stop the control plane started by cluster-up; nothing is left running.
cluster-down: $(STAMP)
	$(CONTROLPLANE) down

cluster-status: $(STAMP)
	$(CONTROLPLANE) status

## Fake GPU nodes (kwok) from a cluster inventory on the running control plane.
cluster-nodes: $(STAMP)
	$(CONTROLPLANE) nodes $(INVENTORY)

SYSTEM_DEPS += controlplane
