"""OpenAI's Responses API over the stream log (docs/protocol.md, "Responses API")."""
