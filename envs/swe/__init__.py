"""SWE-bench-style tasks: instances, per-repo environment specs, and grading with swebench's own parsers."""
