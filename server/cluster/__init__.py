"""Several machines behind one address (docs/cluster.md): the replicas that run jobs (replica.py), the
front end's view of one (remote.py), and joining a Ray cluster to deploy them (launch.py). Imports
Ray, the `underpaint[cluster]` extra, only when `--cluster` is given."""
