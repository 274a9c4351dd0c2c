"""Local tools: a throwaway Redis, the SAM template reader, payload 2.0 events, a local HTTP API and a demo."""
