"""Example task plugins: load one with ``GATEWAY_TASK_MODULES=examples.tasks.words``."""
