"""ModelMonitor's development tooling, kept out of the runtime package and its images: the local Kubernetes
sandbox (`devcluster`, `modelmonitor cluster ...`) and the narrated demo (`demo`, `modelmonitor demo`)."""
