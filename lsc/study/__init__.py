"""The experiments' plumbing: run many `lsc.train` jobs and read their logs back (`runs`), and write the tables,
JSON and figures every study publishes (`report`). The benchmark CLIs live in `lsc.bench`."""
