"""The OpenAI-compatible HTTP API: `routes` (POST /v1/chat/completions, GET /v1/models), `schema` (a request
checked into the engine's types; every field understood or refused), `fields` (ApiError and typed field
readers), `tools` (tools, tool_choice and tool turns) and `calls` (tool calls parsed out of an answer into
OpenAI's shapes)."""
