"""Structured answers on the local engine: OpenAI tools in Qwen2.5's own tool-call format (qwen_tools) and
llama.cpp grammars that force JSON or a tool call (grammar)."""
