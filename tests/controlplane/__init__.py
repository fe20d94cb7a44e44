"""A real local Kubernetes control plane for fairpool's integration tests, demos and
benchmarks: etcd and kube-apiserver built from Go modules, kwok playing the kubelets of
fake GPU nodes. See README.md in this folder."""

from tests.controlplane.cluster import ClusterError, ControlPlane, running, start, status, stop

__all__ = ["ClusterError", "ControlPlane", "running", "start", "status", "stop"]
