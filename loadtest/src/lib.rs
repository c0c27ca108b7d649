//! duet-loadtest: the load generator and the engine comparison harness (issue 4).
