"""``pollkit bench``: what a user reruns to choose a driver (harness shared with benchmarks/)."""
