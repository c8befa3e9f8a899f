"""What the tests and the benchmarks share: running the project as a user does (processes
on a copy, a fixture application, servers to pause and stop), the migration harness, the
rolling-deploy fleet and the container projects. Not in the production image."""
