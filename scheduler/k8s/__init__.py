"""The Kubernetes adapter: cluster objects in, engine snapshots out, decisions carried out.

- `convert`: pure conversion of API objects (JSON dicts) to snapshot types.
- `informer`: list + watch one resource into a local store, re-listing on 410 Gone.
- `cache`: the cluster cache (nodes, pods, priority classes, assumed binds) -> Snapshot.
- `binder`, `evictor`, `events`, `leader`: the effects.
"""
