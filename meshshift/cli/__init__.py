"""The `meshshift` command line: a client of the daemon, the cluster and the spec, on top of everything."""
