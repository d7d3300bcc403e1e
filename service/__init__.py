"""The HTTP service: FastAPI app, inference engine, CLI and client."""
