"""Access control: who is calling (API keys, tokens) and what they may do (permissions)."""
