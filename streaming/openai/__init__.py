"""The OpenAI-compatible API of docs/protocol.md, "Token streams": /v1/chat/completions and
/v1/models (``views``), its request parsing (``parsing``) and its errors (``errors``)."""
