"""LLM agents over any OpenAI-compatible endpoint: the client (retries, usage, cost), answer
parsing (SEARCH/REPLACE diffs or full programs), prompt templates, and the Researcher, Analyst
and Supervisor. The engine (glia_evo.engine) runs them in threads beside the evaluations."""
from .agents import (AnalystSnapshot, LLMAnalyst, ResearchOutcome, Researcher, ResearchSnapshot,
                     Supervisor, SupervisorSnapshot, split_insights)
from .answers import AnswerError, ResearchAnswer, apply_diff, parse_answer
from .client import (ChatResult, LLMCancelled, LLMClient, LLMError, LLMFatal, LLMUnavailable,
                     api_key_from_env, pick_model, price)
from .prompts import Prompts

__all__ = ["AnalystSnapshot", "AnswerError", "ChatResult", "LLMAnalyst", "LLMCancelled",
           "LLMClient", "LLMError", "LLMFatal", "LLMUnavailable", "Prompts", "ResearchAnswer",
           "ResearchOutcome", "ResearchSnapshot", "Researcher", "Supervisor",
           "SupervisorSnapshot", "api_key_from_env", "apply_diff", "parse_answer", "pick_model",
           "price", "split_insights"]
