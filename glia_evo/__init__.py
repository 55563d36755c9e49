"""glia-evo: evolutionary search for LLM-serving cluster policies (the engine)."""
__version__ = "0.1.0"
