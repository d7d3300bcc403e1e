"""Training jobs: their specification, the queue, and the processes that run them."""
