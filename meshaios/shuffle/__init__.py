"""MapReduce on the mesh: hash-partitioned map outputs, fetched part by part by reducers, peer to peer."""
