"""`python -m ftrecipes.serve`: put a tuned model behind an OpenAI-compatible server (vLLM, or
`transformers serve` on CPU). See `ftrecipes.serve.__main__` and docs/evaluate-and-deploy.md."""
