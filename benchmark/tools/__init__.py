"""Tools that read or time the pipeline, not part of it: `make perf`, `make verify`, `make gpu-check`, `make docs`."""
