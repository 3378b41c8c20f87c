"""Tool-use envs: the agent calls tools (OpenAI function schemas in info["tools"]) that run in a sandbox."""
