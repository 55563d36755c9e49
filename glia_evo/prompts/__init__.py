"""Prompt templates of the LLM agents (package data; `string.Template` files with $placeholders).

Edit a copy and point `llm.prompts_dir` at its folder to change a prompt without touching the
package: files found there take precedence over these.
"""
